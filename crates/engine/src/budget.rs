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

/// How old an `Sforce-Limit-Info` reading may be and still stand for the org's usage: any
/// answer from Salesforce carries one, so a run that already called it needs no `/limits` read.
const FRESH: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// The org's allocation and use: from the latest `Sforce-Limit-Info` header this client saw when
/// it is fresh (no call), else from `/limits` (one call); then the ledger.
pub(crate) async fn today(ctx: &Context, now: DateTime<Utc>) -> Result<BudgetReport, RunError> {
    let seen = ctx
        .salesforce
        .api_usage()
        .filter(|s| s.observed_at.elapsed().is_ok_and(|age| age <= FRESH))
        .and_then(|s| s.info.api_usage);
    let (max, remaining) = match seen {
        Some(u) => (u.max, u.max.saturating_sub(u.used)),
        None => {
            let limits =
                ctx.salesforce.limits().await.map_err(|source| RunError::Salesforce { what: "org limits", source })?;
            limits
                .daily_api_requests()
                .map_or((0, 0), |l| (u64::try_from(l.max).unwrap_or(0), u64::try_from(l.remaining).unwrap_or(0)))
        }
    };
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

/// Today's budget, read when a stage first needs it, so a run that finds nothing to read from or
/// write to Salesforce spends no call on learning it.
pub(crate) struct Budget {
    now: DateTime<Utc>,
    read: tokio::sync::OnceCell<BudgetReport>,
    /// Salesforce calls reading the budget took (0 or 1): a run's allowance is what is
    /// available less every other call the run made (the ledger is settled when it ends).
    own_calls: std::sync::atomic::AtomicU64,
}

impl Budget {
    pub(crate) fn new(now: DateTime<Utc>) -> Self {
        Budget { now, read: tokio::sync::OnceCell::new(), own_calls: Default::default() }
    }

    /// Reads the budget on first use (see [`today`]).
    pub(crate) async fn get(&self, ctx: &Context) -> Result<&BudgetReport, RunError> {
        self.read
            .get_or_try_init(|| async {
                let before = ctx.salesforce.requests_sent();
                let report = today(ctx, self.now).await?;
                let spent = ctx.salesforce.requests_sent().saturating_sub(before);
                self.own_calls.store(spent, std::sync::atomic::Ordering::Relaxed);
                Ok(report)
            })
            .await
    }

    /// [`Budget::get`] right after a call of this run whose answer carried the org's usage, so
    /// that no `/limits` read is needed: those `calls` stand for the read the budget would have
    /// made (the allowance already keeps one call for it), not for work on top of it.
    pub(crate) async fn get_priced_by(&self, ctx: &Context, calls: u64) -> Result<&BudgetReport, RunError> {
        let first = self.read.get().is_none();
        let report = self.get(ctx).await?;
        if first && self.own_calls() == 0 {
            self.own_calls.store(calls.min(1), std::sync::atomic::Ordering::Relaxed);
        }
        Ok(report)
    }

    /// The budget if a stage has read it; otherwise usagesync's own figures from the ledger
    /// with the org's last reading the store holds (nothing was spent, nothing needed it).
    pub(crate) async fn report(&self, ctx: &Context) -> Result<BudgetReport, RunError> {
        if let Some(r) = self.read.get() {
            return Ok(r.clone());
        }
        let ledger = ctx.store.budget_day(self.now.date_naive()).await?;
        let (max, used) = (ledger.org_max.unwrap_or(0), ledger.org_used.unwrap_or(0));
        let cap = (max as f64 * ctx.config.budget.daily_share).floor() as u64;
        Ok(BudgetReport {
            org_max: max,
            org_used: used,
            daily_share: ctx.config.budget.daily_share,
            cap,
            spent_before: ledger.spent,
            this_run: 0,
            available: cap.saturating_sub(ledger.spent + ledger.reserved + 1),
        })
    }

    /// The budget as far as it is known without a `/limits` read: read (no call) when a fresh
    /// `Sforce-Limit-Info` header stands for the org, else usagesync's own figures from the
    /// ledger with the org's last reading today (its floor applied). Only a day with no reading
    /// yet, or a last reading that found the org spent, costs the `/limits` call. For a refusal
    /// before a run reads anything; what a run writes is still weighed against [`Budget::get`].
    pub(crate) async fn known(&self, ctx: &Context) -> Result<BudgetReport, RunError> {
        match self.known_free(ctx).await? {
            Some(report) => Ok(report),
            None => self.get(ctx).await.cloned(),
        }
    }

    /// [`Budget::known`] where it costs no call; `None` where it would read `/limits`. A stage
    /// whose first call is a read it makes anyway (the Account pages) makes that read instead:
    /// its answer carries the org's usage, so [`Budget::get`] then costs nothing.
    pub(crate) async fn known_free(&self, ctx: &Context) -> Result<Option<BudgetReport>, RunError> {
        let fresh = ctx
            .salesforce
            .api_usage()
            .filter(|s| s.observed_at.elapsed().is_ok_and(|age| age <= FRESH))
            .and_then(|s| s.info.api_usage)
            .is_some();
        if self.read.get().is_some() || fresh {
            return self.get(ctx).await.cloned().map(Some);
        }
        let ledger = ctx.store.budget_day(self.now.date_naive()).await?;
        let (Some(max), Some(used)) = (ledger.org_max, ledger.org_used) else {
            return Ok(None);
        };
        let mut report = self.report(ctx).await?;
        // usagesync's own share is exact from the ledger; the org's reading may be old, and a
        // spent org is read again (the allocation comes back as the 24 hours roll on).
        let org = max.saturating_sub(used).saturating_sub(ctx.config.budget.min_remaining);
        if org == 0 && report.available > 0 {
            return Ok(None);
        }
        report.available = report.available.min(org);
        Ok(Some(report))
    }

    /// Calls reading the budget took (0 before it was read, or when a fresh header sufficed).
    pub(crate) fn own_calls(&self) -> u64 {
        self.own_calls.load(std::sync::atomic::Ordering::Relaxed)
    }
}
