//! Today's API allowance for a run: the configured share of the org's `DailyApiRequests`,
//! less what usagesync already spent today (the ledger in the store, shared by every worker),
//! and never below the org-wide floor the config keeps free for other integrations.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::workflow::{Context, RunError};

#[derive(Debug, Clone, Default, Serialize)]
pub struct BudgetReport {
    /// The org's daily allocation and what all integrations had used when the run started.
    pub org_max: u64,
    pub org_used: u64,
    pub daily_share: f64,
    /// usagesync's share of today's allocation.
    pub cap: u64,
    /// Spent by usagesync today before this run (every workflow, every worker).
    pub spent_before: u64,
    /// Spent by this run.
    pub this_run: u64,
    /// What this run may still spend when it started, after its `/limits` read.
    pub available: u64,
}

impl BudgetReport {
    pub fn left_after(&self) -> u64 {
        self.cap.saturating_sub(self.spent_before + self.this_run)
    }
}

/// Reads `/limits` (one call) and the ledger.
pub(crate) async fn today(ctx: &Context, now: DateTime<Utc>) -> Result<BudgetReport, RunError> {
    let limits = ctx.salesforce.limits().await.map_err(|source| RunError::Salesforce { what: "org limits", source })?;
    let (max, remaining) = limits
        .daily_api_requests()
        .map_or((0, 0), |l| (u64::try_from(l.max).unwrap_or(0), u64::try_from(l.remaining).unwrap_or(0)));
    let day = now.date_naive();
    ctx.store.observe_org_usage(day, max - remaining.min(max), max, now).await?;
    let ledger = ctx.store.budget_day(day).await?;
    let budget = &ctx.config.budget;
    // Truncation is the conservative direction for a cap.
    let cap = (max as f64 * budget.daily_share).floor() as u64;
    let ours = cap.saturating_sub(ledger.spent + ledger.reserved + 1);
    let org = remaining.saturating_sub(budget.min_remaining);
    Ok(BudgetReport {
        org_max: max,
        org_used: max - remaining.min(max),
        daily_share: budget.daily_share,
        cap,
        spent_before: ledger.spent,
        this_run: 0,
        available: ours.min(org),
    })
}
