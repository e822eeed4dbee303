//! `usagesync bench engagement`: the engagement workflow at 10,000 and 100,000 accounts, with
//! the emulators in a child process (`usagesync emulate`) so that the peak RSS reported is the
//! engine's alone. For each size: a first run, a no-change run and a run after 1% of accounts'
//! usage changed, then the obvious script a user would otherwise write (one update call per
//! account) on the same emulator, for the ratio of API calls. The store column is the SQLite
//! file's size after each run (free pages included).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use engine::workflow::{Context, RunOptions, RunReport};
use futures_util::stream::{self, StreamExt};
use serde_json::{Value, json};

use super::table::{self, thousands};

/// Peak resident memory of this process since the last reset, in MiB (Linux).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// Starts a new peak-RSS measurement (Linux: writing 5 to clear_refs resets VmHWM).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct Measured {
    label: &'static str,
    seconds: f64,
    peak_mib: f64,
    /// The SQLite store's size after the run, in MB.
    store_mb: f64,
    report: RunReport,
}

pub async fn engagement(sizes: &[usize], days: u32) -> Result<()> {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for &accounts in sizes {
        eprintln!("Generating {accounts} accounts × {days} days in the emulator process…");
        let started = Instant::now();
        let mut child = super::emulate::in_child(accounts, days).await?;
        eprintln!("  ready in {:.1}s", started.elapsed().as_secs_f64());
        let dir = tempfile::tempdir().context("Failed to make a temporary directory")?;
        let store = format!("sqlite://{}", dir.path().join("bench.db").display());
        let ctx =
            super::demo::context(super::demo::DEMO_CONFIG, "bench.yaml", [&child.salesforce, &child.pendo, &store])
                .await?;

        let mut measured = Vec::new();
        for label in ["first run", "no change", "1% changed"] {
            if label == "1% changed" {
                change_one_percent(&ctx, &child.pendo, accounts).await?;
            }
            reset_peak_rss();
            let t = Instant::now();
            let options = RunOptions { dry_run: false, trigger: "bench".into(), progress: None, ..Default::default() };
            let report = engine::workflow::run(&ctx, "engagement", &options).await?;
            let (seconds, peak_mib) = (t.elapsed().as_secs_f64(), peak_rss_mib());
            // Read after the timings: counting the tables is not the run's work.
            let store_mb = ctx.store.store_size().await?.bytes as f64 / 1e6;
            measured.push(Measured { label, seconds, peak_mib, store_mb, report });
        }
        let (naive_calls, naive_seconds) = naive(&ctx).await?;
        for m in &measured {
            let r = &m.report;
            let kinds: Vec<String> = r.api_calls.iter().map(|(k, v)| format!("{k} {v}")).collect();
            rows.push(vec![
                thousands(accounts as u64),
                m.label.to_owned(),
                format!("{:.1}", m.seconds),
                format!("{:.0}", m.peak_mib),
                format!("{:.1}", m.store_mb),
                thousands(r.written as u64),
                thousands(r.total_api_calls()),
                thousands(r.write_calls()),
                kinds.join(", "),
            ]);
        }
        for m in &measured {
            let steps: Vec<String> = m.report.timings.iter().map(|(n, t)| format!("{n} {t:.1}s")).collect();
            notes.push(format!("{} accounts, {}: {}", thousands(accounts as u64), m.label, steps.join(", ")));
        }
        let first = &measured[0].report;
        notes.push(format!(
            "{} accounts: the one-call-per-account script took {} calls and {:.1}s to write the {} matched accounts; \
             usagesync's first run took {} calls: {:.0}× fewer.",
            thousands(accounts as u64),
            thousands(naive_calls),
            naive_seconds,
            thousands(first.matched as u64),
            thousands(first.total_api_calls()),
            naive_calls as f64 / first.total_api_calls().max(1) as f64
        ));
        child.process.kill().await.ok();
    }
    table::print(
        &[
            "accounts",
            "run",
            "seconds",
            "peak RSS MiB",
            "store MB",
            "written",
            "SF calls",
            "write calls",
            "calls by kind",
        ],
        &rows,
    );
    println!();
    for n in notes {
        println!("{n}");
    }
    Ok(())
}

/// New usage yesterday for every 100th account, through the Pendo emulator's admin API.
async fn change_one_percent(ctx: &Context, pendo_url: &str, accounts: usize) -> Result<()> {
    let gc = emulator::pendo::GenConfig { seed: 1, accounts, days: 1, ..Default::default() };
    let page = ctx.pendo.pages(&[]).await?.into_iter().next().context("the emulator has no pages")?.id;
    let yesterday = chrono::Utc::now().timestamp_millis() - 25 * 3_600_000;
    let events: Vec<Value> = (0..accounts)
        .step_by(100)
        .map(|i| emulator::pendo::generate::account_profile(&gc, i))
        .filter_map(|p| {
            let visitor = p.visitors.first()?;
            Some(json!({"kind": "page", "id": page, "visitorId": visitor.id, "accountId": p.id,
                        "time": yesterday, "numEvents": 777, "numMinutes": 77}))
        })
        .collect();
    let response = reqwest::Client::new()
        .post(format!("{pendo_url}/__emulator/seed"))
        .json(&json!({"events": events}))
        .send()
        .await
        .context("Failed to seed the usage change")?;
    if !response.status().is_success() {
        bail!("the Pendo emulator refused the usage change: {}", response.text().await.unwrap_or_default());
    }
    Ok(())
}

/// The obvious script: every matched account's values, one PATCH each (8 at a time).
async fn naive(ctx: &Context) -> Result<(u64, f64)> {
    let entries = ctx.store.id_map("engagement").await?;
    let ids: Vec<String> = entries.into_iter().filter_map(|e| e.salesforce_id).collect();
    let client = ctx.salesforce.clone();
    let before = client.requests_sent();
    let started = Instant::now();
    let body = Arc::new(json!({"Pendo_Events__c": 1, "Pendo_Minutes__c": 1, "Pendo_Active_Visitors__c": 1}));
    let failures = stream::iter(ids)
        .map(|id| {
            let client = client.clone();
            let body = Arc::clone(&body);
            async move {
                let Ok(id) = salesforce::SalesforceId::parse(&id) else { return 1 };
                usize::from(client.update("Account", &id, body.as_ref()).await.is_err())
            }
        })
        .buffer_unordered(8)
        .fold(0usize, |a, f| async move { a + f })
        .await;
    if failures > 0 {
        bail!("{failures} naive updates failed");
    }
    Ok((client.requests_sent() - before, started.elapsed().as_secs_f64()))
}
