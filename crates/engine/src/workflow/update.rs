//! The update stage: changed fields onto records that exist (Accounts, trial Opportunities),
//! for every template that updates. What the plan sends is reserved in the shared budget
//! ledger first (another worker may have taken the day's share since planning: then all of it
//! is deferred), delivered by the planned path, and settled with the calls really made. A
//! spent allocation met mid-delivery defers the rest, and those records are counted and
//! reported as deferred, so the run never says it succeeded while records wait. What was
//! written is then read back ([`crate::verify`]) and drift reported.

use chrono::{DateTime, Utc};

use super::{BudgetReport, Context, Meter, RunError};
use crate::change::Change;
use crate::deliver::{self, Delivery, RecordRetry};
use crate::plan::Plan;
use crate::store::RunId;
use crate::testhook;
use crate::verify::{self, VerifyReport, Written};

/// What the stage did: the delivery, and every record not sent (over the plan, the budget
/// taken by another worker, or the allocation spent mid-run).
pub(crate) struct Updated {
    pub delivery: Delivery,
    pub deferred: Vec<Change>,
    /// The read-back of what was written.
    pub verify: VerifyReport,
}

/// Sends `changes` to `object` records as `plan` says (its first `plan.send`, by `plan.path`).
///
/// # Errors
/// Only store failures; Salesforce refusals are in the delivery.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn deliver(
    ctx: &Context,
    workflow: &str,
    object: &str,
    plan: &Plan,
    mut changes: Vec<Change>,
    budget: &BudgetReport,
    meter: &mut Meter<'_>,
    now: DateTime<Utc>,
    progress: &(dyn Fn(usize) + Sync),
    run: RunId,
) -> Result<Updated, RunError> {
    let mut deferred = changes.split_off(plan.send.min(changes.len()));
    let day = now.date_naive();
    let reserve = plan.write_calls;
    let reserved =
        !changes.is_empty() && reserve > 0 && ctx.store.reserve_budget(day, workflow, reserve, budget.cap, now).await?;
    testhook::crash_point("plan");
    if !reserved {
        changes.append(&mut deferred);
        return Ok(Updated { delivery: Delivery::default(), deferred: changes, verify: VerifyReport::default() });
    }
    let before = ctx.salesforce.requests_sent();
    let mut delivery =
        deliver::deliver(&ctx.salesforce, object, plan.path, changes, &RecordRetry::default(), progress).await;
    let spent = ctx.salesforce.requests_sent().saturating_sub(before);
    ctx.store.settle_budget(day, workflow, reserve, spent, now).await?;
    meter.step("deliver", Some(plan.path.as_str()));
    meter.settled += spent;
    deferred.append(&mut delivery.deferred);
    testhook::crash_point("record");
    let written: Vec<Written> = delivery
        .written
        .iter()
        .map(|c| Written { key: c.key.clone(), salesforce_id: c.salesforce_id.clone(), fields: c.fields.clone() })
        .collect();
    let verify = verify::verify(ctx, workflow, object, &written, budget, meter, run, now).await?;
    Ok(Updated { delivery, deferred, verify })
}
