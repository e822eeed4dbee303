//! `/metrics` in the Prometheus text format, computed from the state store on each scrape: the
//! counters then agree with `usagesync runs` by construction, survive restarts, and cover every
//! worker sharing the store, not just this process. Two families are this process's own,
//! because nothing stores them: Pendo calls by kind (counted by the Pendo client) and the
//! webhook processing-lag histogram ([`engine::observe::WEBHOOK_LAG`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::Utc;
use engine::store::Run;
use engine::workflow::Context;

/// Upper bounds of the run-duration histogram, in seconds.
const DURATION_BUCKETS: &[f64] = &[1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0];

/// Label values are quoted with `\`, `"` and newlines escaped, as the text format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders every metric. `running` holds the workflows with a run in flight in this process.
pub async fn render(ctx: &Context, running: &[String]) -> Result<String, engine::store::StoreError> {
    let runs = ctx.store.list_runs(None, 0).await?;
    let mut out = String::new();

    let mut by_state: BTreeMap<(&str, String), u64> = BTreeMap::new();
    let mut written: BTreeMap<&str, u64> = BTreeMap::new();
    let mut failed: BTreeMap<&str, u64> = BTreeMap::new();
    let mut deferred: BTreeMap<&str, u64> = BTreeMap::new();
    let mut calls: BTreeMap<(&str, String), u64> = BTreeMap::new();
    let mut durations: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for r in &runs {
        let w = r.workflow.as_str();
        *by_state.entry((w, r.state.as_str().to_owned())).or_default() += 1;
        let stat = |k: &str| r.stats.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        *written.entry(w).or_default() += stat("written");
        *failed.entry(w).or_default() += stat("failed");
        *deferred.entry(w).or_default() += stat("deferred");
        if let Some(m) = r.stats.get("api_calls").and_then(serde_json::Value::as_object) {
            for (kind, n) in m {
                *calls.entry((w, kind.clone())).or_default() += n.as_u64().unwrap_or(0);
            }
        }
        if let Some(d) = duration(r) {
            durations.entry(w).or_default().push(d);
        }
    }

    header(&mut out, "usagesync_runs_total", "counter", "Runs recorded in the store, by workflow and final state.");
    for ((w, state), n) in &by_state {
        let _ = writeln!(out, "usagesync_runs_total{{workflow=\"{}\",state=\"{}\"}} {n}", label(w), label(state));
    }
    last_success(&mut out, &runs);
    for (name, help, map) in [
        ("usagesync_records_written_total", "Records written to Salesforce.", &written),
        ("usagesync_records_failed_total", "Records Salesforce refused (kept for replay).", &failed),
        ("usagesync_records_deferred_total", "Records deferred by the API budget to a later run.", &deferred),
    ] {
        header(&mut out, name, "counter", help);
        for (w, n) in map {
            let _ = writeln!(out, "{name}{{workflow=\"{}\"}} {n}", label(w));
        }
    }
    header(&mut out, "usagesync_api_calls_total", "counter", "Salesforce API calls made by runs, by kind.");
    for ((w, kind), n) in &calls {
        let _ = writeln!(out, "usagesync_api_calls_total{{workflow=\"{}\",kind=\"{}\"}} {n}", label(w), label(kind));
    }

    header(
        &mut out,
        "usagesync_open_failures",
        "gauge",
        "Failures waiting for replay, by workflow and Salesforce error code.",
    );
    // Workflows in the config and any that ran before and left failures behind.
    let names: std::collections::BTreeSet<&str> =
        ctx.config.workflows.keys().map(String::as_str).chain(by_state.keys().map(|(w, _)| *w)).collect();
    for name in names {
        for (code, _, n) in ctx.store.failure_groups(Some(name)).await? {
            let _ =
                writeln!(out, "usagesync_open_failures{{workflow=\"{}\",code=\"{}\"}} {n}", label(name), label(&code));
        }
    }

    let day = ctx.store.budget_day(Utc::now().date_naive()).await?;
    let cap = day.org_max.map(|max| (max as f64 * ctx.config.budget.daily_share).floor() as u64);
    header(&mut out, "usagesync_api_budget_spent_today", "gauge", "Salesforce calls usagesync spent today (UTC).");
    let _ = writeln!(out, "usagesync_api_budget_spent_today {}", day.spent);
    if let Some(cap) = cap {
        header(&mut out, "usagesync_api_budget_cap_today", "gauge", "usagesync's share of today's allocation.");
        let _ = writeln!(out, "usagesync_api_budget_cap_today {cap}");
        header(&mut out, "usagesync_api_budget_remaining", "gauge", "Calls left of usagesync's share today.");
        let _ = writeln!(out, "usagesync_api_budget_remaining {}", cap.saturating_sub(day.spent + day.reserved));
    }

    header(&mut out, "usagesync_run_duration_seconds", "histogram", "Wall time of finished runs.");
    for (w, ds) in &durations {
        for le in DURATION_BUCKETS {
            let n = ds.iter().filter(|d| **d <= *le).count();
            let _ = writeln!(out, "usagesync_run_duration_seconds_bucket{{workflow=\"{}\",le=\"{le}\"}} {n}", label(w));
        }
        let _ = writeln!(
            out,
            "usagesync_run_duration_seconds_bucket{{workflow=\"{}\",le=\"+Inf\"}} {}",
            label(w),
            ds.len()
        );
        let _ =
            writeln!(out, "usagesync_run_duration_seconds_sum{{workflow=\"{}\"}} {}", label(w), ds.iter().sum::<f64>());
        let _ = writeln!(out, "usagesync_run_duration_seconds_count{{workflow=\"{}\"}} {}", label(w), ds.len());
    }

    let inbox = ctx.store.inbox_counts().await?;
    header(
        &mut out,
        "usagesync_webhook_events_received_total",
        "counter",
        "Webhook events stored (repeats not counted).",
    );
    let _ = writeln!(out, "usagesync_webhook_events_received_total {}", inbox.received);
    header(&mut out, "usagesync_webhook_queue_depth", "gauge", "Stored webhook events not processed yet.");
    let _ = writeln!(out, "usagesync_webhook_queue_depth {}", inbox.pending);
    let oldest = ctx.store.pending_events(1).await?.into_iter().next();
    header(&mut out, "usagesync_webhook_lag_seconds", "gauge", "Age of the oldest unprocessed webhook event.");
    let lag = oldest.map_or(0.0, |e| (Utc::now() - e.received_at).num_milliseconds().max(0) as f64 / 1000.0);
    let _ = writeln!(out, "usagesync_webhook_lag_seconds {lag}");

    pendo_calls(&mut out, &ctx.pendo);
    webhook_lag(&mut out, &engine::observe::WEBHOOK_LAG.snapshot());

    header(&mut out, "usagesync_workflow_running", "gauge", "1 while this process runs the workflow.");
    for name in ctx.config.workflows.keys() {
        let on = u8::from(running.iter().any(|r| r == name));
        let _ = writeln!(out, "usagesync_workflow_running{{workflow=\"{}\"}} {on}", label(name));
    }
    Ok(out)
}

/// When each workflow last succeeded (what people alert on: "no success for N hours"), and the
/// build this process runs.
fn last_success(out: &mut String, runs: &[Run]) {
    let mut last: BTreeMap<&str, chrono::DateTime<Utc>> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.state == engine::store::RunState::Succeeded && !r.dry_run) {
        let at = r.finished_at.unwrap_or(r.started_at);
        let e = last.entry(r.workflow.as_str()).or_insert(at);
        *e = (*e).max(at);
    }
    header(
        out,
        "usagesync_workflow_last_success_timestamp_seconds",
        "gauge",
        "When the workflow's last successful run finished (Unix time).",
    );
    for (w, at) in &last {
        let _ = writeln!(
            out,
            "usagesync_workflow_last_success_timestamp_seconds{{workflow=\"{}\"}} {}",
            label(w),
            at.timestamp()
        );
    }
    header(out, "usagesync_build_info", "gauge", "Always 1; the version of the running binary as a label.");
    let _ = writeln!(out, "usagesync_build_info{{version=\"{}\"}} 1", label(env!("CARGO_PKG_VERSION")));
}

/// Requests this process sent to Pendo, every kind listed (0 included) so a rate is defined.
fn pendo_calls(out: &mut String, pendo: &pendo::Client) {
    header(
        out,
        "usagesync_pendo_calls_total",
        "counter",
        "Requests this process sent to Pendo (retries included), by kind.",
    );
    for (kind, n) in pendo.calls_by_kind() {
        let _ = writeln!(out, "usagesync_pendo_calls_total{{kind=\"{}\"}} {n}", label(kind));
    }
}

fn webhook_lag(out: &mut String, h: &engine::observe::Snapshot) {
    let name = "usagesync_webhook_processing_lag_seconds";
    header(out, name, "histogram", "From storing a webhook event to the batch in this process that processed it.");
    for (le, n) in &h.buckets {
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum {}", h.sum_seconds);
    let _ = writeln!(out, "{name}_count {}", h.count);
}

fn duration(r: &Run) -> Option<f64> {
    let finished = r.finished_at?;
    Some((finished - r.started_at).num_milliseconds() as f64 / 1000.0)
}
