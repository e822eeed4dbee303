//! `usagesync bench engagement`: the engagement workflows at 10,000 and 100,000 accounts, with
//! the emulators in a child process (`usagesync emulate`) so that the peak RSS reported is the
//! engine's alone. For each size and workflow: a first run, a no-change run and a run after 1% of
//! accounts' usage changed; after the Account workflow, the obvious script a user would otherwise
//! write (one update call per account) on the same emulator, for the ratio of API calls. The
//! workflows: the demo's Account engagement, its per-person Contact engagement, the same
//! Account figures over an hourly window that includes the current hour, and, in a world whose
//! subsidiaries are their parents' children, Account engagement with the hierarchy rules and a
//! family roll-up onto each parent. The store column is the SQLite file's size after each run
//! (free pages included; the workflows of one world share a store).

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

/// Measured beside the demo's `engagement` and `people`.
const HOURLY: &str = r#"
  # The demo's Account figures over the last 24 hours, this hour included, in fields of their own.
  hourly:
    template: engagement-scores
    schedule: "15 * * * *"
    window: 24h
    window_includes_current: true
    matching:
      - { rule: pendo_metadata, group: custom, field: sfdcaccountid }
      - { rule: external_id, field: Pendo_Account_Id__c }
      - { rule: email_domain, website_field: Website }
    score:
      active_visitors: { weight: 0.5, target: 5 }
      events: { weight: 0.5, target: 200 }
    fields:
      active_visitors: Pendo_Visitors_24h__c
      events: Pendo_Events_24h__c
      score: Pendo_Score_24h__c
"#;

/// In a world of its own, under the demo's connections (its fields are the demo engagement's).
const FAMILY: &str = r#"
  # The demo's engagement with the hierarchy rules and each family rolled up onto its parent.
  family:
    template: engagement-scores
    schedule: "0 6 * * *"
    window_days: 30
    matching:
      - { rule: pendo_metadata, group: custom, field: sfdcaccountid }
      - { rule: external_id, field: Pendo_Account_Id__c }
      - { rule: email_domain, website_field: Website }
      - { rule: child_field, group: agent, field: name, account_field: Name }
      - { rule: pendo_parent, group: custom, field: parentaccountid }
    score:
      active_visitors: { weight: 0.3, target: 25 }
      active_days: { weight: 0.3, target: 20 }
      minutes: { weight: 0.1, target: 600 }
      feature_adoption: { weight: 0.2, target: 1.0 }
      guide_completion: { weight: 0.1, target: 1.0 }
    fields:
      active_visitors: Pendo_Active_Visitors__c
      active_days: Pendo_Active_Days__c
      events: Pendo_Events__c
      minutes: Pendo_Minutes__c
      score: Pendo_Engagement_Score__c
      updated_at: Pendo_Engagement_Updated__c
    rollup_fields:
      active_visitors: Family_Visitors__c
      events: Family_Events__c
      score: Family_Score__c
"#;

/// The fields the workflows write that the emulated org lacks: the people workflow's Contact
/// fields (as the demo adds them) and the extra workflows' Account fields.
const EXTRA_FIELDS: [(&str, &str); 11] = [
    ("Contact", "Pendo_Active_Days__c"),
    ("Contact", "Pendo_Events__c"),
    ("Contact", "Pendo_Minutes__c"),
    ("Contact", "Pendo_Features_Used__c"),
    ("Contact", "Pendo_Guides_Completed__c"),
    ("Account", "Pendo_Visitors_24h__c"),
    ("Account", "Pendo_Events_24h__c"),
    ("Account", "Pendo_Score_24h__c"),
    ("Account", "Family_Visitors__c"),
    ("Account", "Family_Events__c"),
    ("Account", "Family_Score__c"),
];

const ALL: [&str; 4] = ["engagement", "people", "hourly", "family"];

struct Measured {
    workflow: &'static str,
    label: &'static str,
    seconds: f64,
    peak_mib: f64,
    /// The SQLite store's size after the run, in MB.
    store_mb: f64,
    report: RunReport,
}

pub async fn engagement(sizes: &[usize], days: u32, only: &[String]) -> Result<()> {
    if let Some(unknown) = only.iter().find(|w| !ALL.contains(&w.as_str())) {
        bail!("--only {unknown}: the workflows are {}", ALL.join(", "));
    }
    let chosen = |w: &str| only.is_empty() || only.iter().any(|o| o == w);
    let head = super::demo::DEMO_CONFIG.split("\nworkflows:").next().unwrap_or_default();
    let configs = [format!("{}{HOURLY}", super::demo::DEMO_CONFIG), format!("{head}\nworkflows:{FAMILY}")];
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for &accounts in sizes {
        // The family workflow needs a world of its own: hierarchies change who matches whom.
        let worlds: [(&[&str], Vec<&'static str>, &String); 2] = [
            (&[], ["engagement", "people", "hourly"].into_iter().filter(|w| chosen(w)).collect(), &configs[0]),
            (&["--hierarchies"], ["family"].into_iter().filter(|w| chosen(w)).collect(), &configs[1]),
        ];
        for (extra, workflows, config) in worlds {
            if workflows.is_empty() {
                continue;
            }
            eprintln!("Generating {accounts} accounts × {days} days {extra:?} in the emulator process…");
            let started = Instant::now();
            let mut child = super::emulate::in_child_with(accounts, days, extra).await?;
            eprintln!("  ready in {:.1}s", started.elapsed().as_secs_f64());
            add_fields(&child.salesforce).await?;
            let dir = tempfile::tempdir().context("Failed to make a temporary directory")?;
            let store = format!("sqlite://{}", dir.path().join("bench.db").display());
            let ctx = super::demo::context(config, "bench.yaml", [&child.salesforce, &child.pendo, &store]).await?;
            for workflow in workflows {
                let measured = measure(&ctx, &child.pendo, accounts, workflow).await?;
                for m in &measured {
                    rows.push(row(accounts, m));
                    let steps: Vec<String> = m.report.timings.iter().map(|(n, t)| format!("{n} {t:.1}s")).collect();
                    notes.push(format!(
                        "{} accounts, {workflow}, {}: matched {}, ambiguous {}; {}",
                        thousands(accounts as u64),
                        m.label,
                        thousands(m.report.matched as u64),
                        thousands(m.report.ambiguous as u64),
                        steps.join(", ")
                    ));
                }
                if workflow == "engagement" {
                    notes.push(naive_note(&ctx, accounts, &measured[0].report).await?);
                }
            }
            child.process.kill().await.ok();
        }
    }
    table::print(
        &[
            "accounts",
            "workflow",
            "run",
            "state",
            "seconds",
            "peak RSS MiB",
            "store MB",
            "written",
            "Pendo calls",
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

/// A first run, a no-change run and a run after 1% of accounts' usage changed.
async fn measure(ctx: &Context, pendo_url: &str, accounts: usize, workflow: &'static str) -> Result<Vec<Measured>> {
    let mut measured = Vec::new();
    for label in ["first run", "no change", "1% changed"] {
        if label == "1% changed" {
            change_one_percent(ctx, pendo_url, accounts).await?;
        }
        reset_peak_rss();
        let t = Instant::now();
        let options = RunOptions { dry_run: false, trigger: "bench".into(), progress: None, ..Default::default() };
        let report = engine::workflow::run(ctx, workflow, &options).await?;
        let (seconds, peak_mib) = (t.elapsed().as_secs_f64(), peak_rss_mib());
        // Read after the timings: counting the tables is not the run's work.
        let store_mb = ctx.store.store_size().await?.bytes as f64 / 1e6;
        // As it happens too: a long bench that fails later keeps what it measured.
        eprintln!(
            "  {workflow}, {label}: {}, {seconds:.1}s, peak RSS {peak_mib:.0} MiB, store {store_mb:.1} MB, written {}, \
             Pendo calls {}, Salesforce calls {} ({:?}), steps {:?}",
            report.state,
            report.written,
            report.pendo_calls,
            report.total_api_calls(),
            report.api_calls,
            report.timings
        );
        measured.push(Measured { workflow, label, seconds, peak_mib, store_mb, report });
    }
    Ok(measured)
}

fn row(accounts: usize, m: &Measured) -> Vec<String> {
    let r = &m.report;
    let kinds: Vec<String> = r.api_calls.iter().map(|(k, v)| format!("{k} {v}")).collect();
    vec![
        thousands(accounts as u64),
        m.workflow.to_owned(),
        m.label.to_owned(),
        r.state.clone(),
        format!("{:.1}", m.seconds),
        format!("{:.0}", m.peak_mib),
        format!("{:.1}", m.store_mb),
        thousands(r.written as u64),
        thousands(r.pendo_calls),
        thousands(r.total_api_calls()),
        thousands(r.write_calls()),
        kinds.join(", "),
    ]
}

/// The one-call-per-account script against usagesync's first run, as a line for the notes.
async fn naive_note(ctx: &Context, accounts: usize, first: &RunReport) -> Result<String> {
    let (naive_calls, naive_seconds) = naive(ctx).await?;
    Ok(format!(
        "{} accounts: the one-call-per-account script took {} calls and {:.1}s to write the {} matched accounts; \
         usagesync's first run took {} calls: {:.0}× fewer.",
        thousands(accounts as u64),
        thousands(naive_calls),
        naive_seconds,
        thousands(first.matched as u64),
        thousands(first.total_api_calls()),
        naive_calls as f64 / first.total_api_calls().max(1) as f64
    ))
}

/// Adds [`EXTRA_FIELDS`] to the emulated org.
async fn add_fields(salesforce_url: &str) -> Result<()> {
    let http = reqwest::Client::new();
    for (object, name) in EXTRA_FIELDS {
        http.post(format!("{salesforce_url}/__emulator/fields/{object}"))
            .json(&json!({"name": name, "type": "double"}))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("Failed to add {object}.{name} to the emulated org"))?;
    }
    Ok(())
}

/// New usage for every 100th account, through the Pendo emulator's admin API: yesterday (for the
/// daily windows, which end there) and an hour ago (for the hourly window, which includes it).
async fn change_one_percent(ctx: &Context, pendo_url: &str, accounts: usize) -> Result<()> {
    // The emulator keeps one row per (visitor, page, hour) and a seed replaces it, so a second
    // change within the hour (the next workflow's) must carry other figures to change anything.
    static ROUND: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let events_per_row = 777 + 100 * ROUND.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let gc = emulator::pendo::GenConfig { seed: 1, accounts, days: 1, ..Default::default() };
    let page = ctx.pendo.pages(&[]).await?.into_iter().next().context("the emulator has no pages")?.id;
    let now = chrono::Utc::now().timestamp_millis();
    let events: Vec<Value> = (0..accounts)
        .step_by(100)
        .map(|i| emulator::pendo::generate::account_profile(&gc, i))
        .filter_map(|p| p.visitors.first().map(|v| (p.id.clone(), v.id.clone())))
        .flat_map(|(account, visitor)| {
            [25, 1].map(|hours_ago| {
                json!({"kind": "page", "id": page, "visitorId": visitor, "accountId": account,
                       "time": now - hours_ago * 3_600_000, "numEvents": events_per_row, "numMinutes": 77})
            })
        })
        .collect();
    // In parts: at a million accounts one request would pass the emulator's body limit.
    let http = reqwest::Client::new();
    for part in events.chunks(5_000) {
        let response = http
            .post(format!("{pendo_url}/__emulator/seed"))
            .json(&json!({"events": part}))
            .send()
            .await
            .context("Failed to seed the usage change")?;
        if !response.status().is_success() {
            bail!("the Pendo emulator refused the usage change: {}", response.text().await.unwrap_or_default());
        }
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
