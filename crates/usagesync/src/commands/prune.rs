//! `usagesync prune`: deletes the history older than `retention.history_days` (what the daemon
//! does every hour) and, on SQLite, gives the freed space back to the filesystem. What it may
//! delete, and what it never does, is decided by the store ([`engine::store::RetentionStore`]).

use anyhow::Result;
use engine::store::{PRUNE_BATCH, Pruned, Store};
use serde::Serialize;

use super::context;
use super::table::{self, thousands};

/// What one prune did, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub history_days: u32,
    /// History older than this was (or would be) deleted.
    pub cutoff: chrono::DateTime<chrono::Utc>,
    pub pruned: Pruned,
    /// Bytes given back to the filesystem (SQLite; 0 on PostgreSQL and in a dry run).
    pub released_bytes: u64,
    pub store_bytes_before: u64,
    pub store_bytes_after: u64,
}

/// Prunes `store` as of `now` under `retention`; `vacuum` rewrites an SQLite file in full.
pub async fn prune(
    store: &dyn Store,
    retention: engine::config::Retention,
    now: chrono::DateTime<chrono::Utc>,
    dry_run: bool,
    vacuum: bool,
) -> Result<Report> {
    let cutoff = retention.cutoff(now);
    let before = store.store_size().await?;
    let pruned = store.prune_history(cutoff, PRUNE_BATCH, dry_run).await?;
    let released_bytes = if dry_run { 0 } else { store.reclaim_space(vacuum).await? };
    let after = if dry_run { before.bytes } else { store.store_size().await?.bytes };
    Ok(Report {
        dry_run,
        history_days: retention.history_days,
        cutoff,
        pruned,
        released_bytes,
        store_bytes_before: before.bytes,
        store_bytes_after: after,
    })
}

pub async fn run(config_path: &std::path::Path, dry_run: bool, vacuum: bool, json: bool) -> Result<u8> {
    let config = context::load_config(config_path)?;
    // The engine's clock, so a rehearsal under USAGESYNC_NOW prunes as of that day.
    let clock = engine::clock::Clock::from_env()?;
    let store = context::open_store(&config, &context::env_var).await?;
    let report = prune(store.as_ref(), config.retention, clock.now(), dry_run, vacuum).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    let p = &report.pruned;
    let rows: Vec<Vec<String>> = [
        ("runs", p.runs),
        ("record outcomes", p.outcomes),
        ("closed failures", p.failures),
        ("processed webhook events", p.inbox_events),
        ("budget ledger rows", p.budget_rows),
    ]
    .iter()
    .map(|(what, n)| vec![(*what).to_owned(), thousands(*n)])
    .collect();
    let verb = if dry_run { "would delete" } else { "deleted" };
    table::print(&["history", verb], &rows);
    say!(
        "History before {} ({} days) {verb}: {} rows. Fingerprints, the create ledger, cursors, kept states, the id \
         map, open and dismissed failures, pending webhook events, running runs and each workflow's latest run and latest success \
         are kept.",
        report.cutoff.format("%Y-%m-%d %H:%M UTC"),
        report.history_days,
        thousands(p.total()),
    );
    if !dry_run {
        say!(
            "Store: {} → {} bytes ({} released to the filesystem).",
            thousands(report.store_bytes_before),
            thousands(report.store_bytes_after),
            thousands(report.released_bytes)
        );
    }
    Ok(0)
}
