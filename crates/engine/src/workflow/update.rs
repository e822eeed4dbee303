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
        .map(|c| Written {
            key: (&c.key).into(),
            salesforce_id: (&c.salesforce_id).into(),
            fields: (&c.fields[..]).into(),
        })
        .collect();
    let verify = verify::verify(ctx, workflow, object, &written, budget, meter, run, now).await?;
    Ok(Updated { delivery, deferred, verify })
}

/// How a template's updated records are kept: under which object and fingerprint scope, by
/// which key in the failure ledger, and with what note on a written record's history row.
pub(crate) struct Recording<'a> {
    pub object: &'a str,
    /// The fingerprint scope the written values are kept under (and read back from as "before").
    pub scope: &'a str,
    /// A record's key in the failure ledger: the template's key, or the record's Id where one
    /// key has several records.
    pub ledger_key: fn(&Change) -> &str,
    /// A note for a written record's history row.
    pub note: &'a (dyn Fn(&Change) -> Option<String> + Sync),
}

/// Records written per store transaction: each chunk's outcomes and fingerprints commit
/// together, and memory holds one chunk's rows at a time rather than the whole run's.
const RECORD_CHUNK: usize = 5_000;

/// `written` in the fingerprints' key order (Salesforce id): each record chunk's reads of the
/// values before and its inserts then go to neighbouring pages of the table, not all over it
/// (a first run's record step at 300,000 accounts took 17 s instead of 28 to 38). Of two writes
/// to one record the later still comes later, so its fingerprints are stored last. The order is
/// sorted as positions, 8 bytes each: a stable sort of the changes themselves takes a buffer of
/// half of them (43 MB at a million accounts).
fn in_key_order(written: Vec<Change>) -> impl Iterator<Item = Change> {
    let mut order: Vec<usize> = (0..written.len()).collect();
    order.sort_unstable_by(|&a, &b| written[a].salesforce_id.cmp(&written[b].salesforce_id).then(a.cmp(&b)));
    let mut slots: Vec<Option<Change>> = written.into_iter().map(Some).collect();
    order.into_iter().filter_map(move |i| slots.get_mut(i).and_then(Option::take))
}

/// The record stage of an update: written records' history rows (with the values they had
/// before) and fingerprints, in transactions of [`RECORD_CHUNK`] records (a record counts as
/// written only once its fingerprints are stored; a refused one keeps none, so the next run or a
/// replay derives and sends it again), refused and deferred records' rows, the failure ledger,
/// and the run's counts. Returns the refused records a person dismissed (see
/// [`super::ledger::Ledger::settle`]).
///
/// # Errors
/// Store failures.
pub(crate) async fn record(
    ctx: &Context,
    workflow: &str,
    run: RunId,
    how: &Recording<'_>,
    updated: Updated,
    report: &mut super::RunReport,
    now: DateTime<Utc>,
) -> Result<std::collections::HashSet<(String, String)>, RunError> {
    use crate::store::{Action, FieldChange, FingerprintPut, RecordOutcome};
    let Updated { delivery, deferred, verify } = updated;
    report.verify.merge(verify);
    report.written += delivery.written.len();
    report.failed += delivery.failed.len();
    report.deferred += deferred.len();
    for f in &delivery.failed {
        if report.failures.len() < 10 {
            report.failures.push(super::FailureSample {
                salesforce_id: f.change.salesforce_id.clone(),
                code: f.code.clone(),
                message: f.message.clone(),
            });
        }
    }
    let mut ledger = super::ledger::Ledger::default();
    ledger.delivery(how.object, &delivery, how.ledger_key);
    let deliver::Delivery { written, failed, .. } = delivery;
    let mut written = in_key_order(written).peekable();
    while written.peek().is_some() {
        let chunk: Vec<Change> = written.by_ref().take(RECORD_CHUNK).collect();
        let keys: Vec<String> = chunk.iter().map(|c| c.salesforce_id.clone()).collect();
        let mut before = ctx.store.written_values(how.scope, &keys).await?;
        let mut outcomes = Vec::with_capacity(chunk.len());
        // Sized exactly: the chunk's largest buffer, which growing by doubling would overshoot.
        let mut prints = Vec::with_capacity(chunk.iter().map(|c| c.prints.len()).sum());
        for c in chunk {
            let old = before.remove(&c.salesforce_id).unwrap_or_default();
            let changes = c
                .fields
                .iter()
                .map(|(f, v)| FieldChange {
                    field: f.to_string(),
                    before: old.iter().find(|(of, _)| **of == **f).map(|(_, ov)| ov.clone()),
                    after: v.clone(),
                })
                .collect();
            prints.extend(c.printed().map(|(field, p, value)| FingerprintPut {
                scope: how.scope.to_owned(),
                key: c.salesforce_id.clone(),
                field: field.to_owned(),
                fingerprint: p,
                written_at: now,
                value: Some(value.clone()),
            }));
            outcomes.push(RecordOutcome {
                object: how.object.into(),
                message: (how.note)(&c),
                changes,
                key: c.key,
                salesforce_id: Some(c.salesforce_id),
                action: Action::Updated,
                error_code: None,
            });
        }
        ctx.store.record_outcomes(run, &outcomes, &prints).await?;
    }
    let changes_of = |c: &Change| -> Vec<FieldChange> {
        c.fields.iter().map(|(f, v)| FieldChange { field: f.to_string(), before: None, after: v.clone() }).collect()
    };
    let mut rest: Vec<RecordOutcome> = failed
        .iter()
        .map(|f| RecordOutcome {
            object: how.object.into(),
            key: f.change.key.clone(),
            salesforce_id: Some(f.change.salesforce_id.clone()),
            action: Action::Failed,
            changes: changes_of(&f.change),
            error_code: Some(f.code.clone()),
            message: Some(format!("{}; sent again next run", f.message)),
        })
        .collect();
    rest.extend(deferred.iter().map(|c| RecordOutcome {
        object: how.object.into(),
        key: c.key.clone(),
        salesforce_id: Some(c.salesforce_id.clone()),
        action: Action::Deferred,
        changes: changes_of(c),
        error_code: None,
        message: Some("over the API budget, or the allocation was spent: sent in a later run".into()),
    }));
    for chunk in rest.chunks(RECORD_CHUNK) {
        ctx.store.record_outcomes(run, chunk, &[]).await?;
    }
    ledger.settle(ctx, workflow, run, now).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(key: &str, id: &str) -> Change {
        Change { key: key.into(), salesforce_id: id.into(), fields: vec![], prints: vec![] }
    }

    #[test]
    fn written_records_come_in_id_order_and_two_writes_to_one_record_keep_theirs() {
        let written = vec![change("b1", "001B"), change("c", "001C"), change("b2", "001B"), change("a", "001A")];
        let keys: Vec<String> = in_key_order(written).map(|c| c.key).collect();
        assert_eq!(keys, ["a", "b1", "b2", "c"]);
        // Enough repeats that an unstable sort alone would reorder some.
        let ids = ["001C", "001A", "001B"];
        let written: Vec<Change> = (0..300).map(|i| change(&i.to_string(), ids[i % 3])).collect();
        let got: Vec<(String, usize)> =
            in_key_order(written).map(|c| (c.salesforce_id, c.key.parse().unwrap())).collect();
        let mut want: Vec<(String, usize)> = (0..300).map(|i| (ids[i % 3].to_owned(), i)).collect();
        want.sort();
        assert_eq!(got, want);
    }
}
