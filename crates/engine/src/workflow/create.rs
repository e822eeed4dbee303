//! The create stage: every record a batch template makes in Salesforce (drop alerts, expansion
//! Opportunities and their Tasks) goes through here, so its guarantees are written once.
//!
//! - **Exactly once.** Every record carries a deterministic key (see [`key`]) in an external-ID
//!   field such as `Usagesync_Key__c`. The key is claimed in the store (`begin_create`), the
//!   record upserted on that field (Salesforce itself makes a repeated upsert find the record
//!   the first one made), then the key is committed with the record's Id.
//! - **Never clobbering.** A record that already holds a key the store has not committed (a
//!   create interrupted between the call and the commit, or a store that was lost or moved to
//!   another backend) is adopted as it is: a Task a person has since marked Completed stays
//!   Completed. Where the org keeps the key field unique (preflight reads it from the describe),
//!   records are inserted and Salesforce itself refuses a key that exists (`DUPLICATE_VALUE`):
//!   only those keys are then looked up, so the usual run costs one call per 200 records. Where
//!   it does not, every key the store has not committed is looked up first, one SOQL query per
//!   200, and only the ones not found are upserted.
//! - **Preflight.** The objects and fields are checked against the org's describe first; a
//!   field with a problem is left out of every record, and a group whose object or key field
//!   has one is held back (skipped, with the reason), so the run ends `partial`.
//! - **Groups.** Records that belong together (an Opportunity and its Task) are a [`Group`]: a
//!   later record may take an earlier one's Id (`WhatId`). A group is complete, or it is
//!   reported failed or deferred and the template keeps its episode or count unchanged, so the
//!   next run derives the same keys, adopts what exists and makes only what is missing.
//! - **One budget.** The calls a batch needs are reserved in the shared ledger before anything
//!   is sent; what does not fit is deferred, and a spent allocation met mid-run defers the rest
//!   (exit 4) instead of reporting refused records.
//! - **Verified.** The records made are read back afterwards ([`crate::verify`]): a value a
//!   trigger, a rule or a person changed since is reported as drift.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use salesforce::{ErrorCode, RetryClass};
use serde_json::{Map, Value};

use super::{BudgetReport, Context, FailureSample, Meter, RunError, RunReport};
use crate::change::FieldName;
use crate::config::Workflow;
use crate::preflight::{self, Quarantine};
use crate::store::{Action, CreateState, FieldChange, RecordOutcome};
use crate::testhook;
use crate::verify::{self, VerifyReport, Written};

/// Records per SOQL key look-up and per Collections upsert call (the documented maximum).
const BATCH: usize = 200;

/// One record to create.
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub object: String,
    /// The deterministic key, written into `key_field`.
    pub key: String,
    pub key_field: String,
    pub fields: Map<String, Value>,
    /// A field that takes the Id of an earlier record of the same group.
    pub link: Option<Link>,
}

/// `field` is set to the Id of record `to` of the group before the record is sent.
#[derive(Debug, Clone)]
pub struct Link {
    pub field: String,
    pub to: usize,
}

/// Records that belong together, made in order, and what history says about them.
#[derive(Debug, Clone)]
pub struct Group {
    /// The Pendo account the group is about (the key of its history rows).
    pub subject: String,
    /// The Salesforce Account, for failure samples.
    pub account_id: String,
    /// Why the group is made, shown in history.
    pub note: String,
    pub records: Vec<NewRecord>,
}

/// What happened to one create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// Made by this call.
    New { id: String },
    /// Already there: committed earlier, or found by its key and adopted unchanged.
    Existing { id: String },
    /// Salesforce refused it; nothing was created.
    Refused { code: String, message: String },
    /// The outcome is unknown (the request may have reached Salesforce); the next run looks the
    /// key up before creating.
    Unknown { message: String },
    /// Not sent: the API budget is spent; the next run sends it.
    Deferred { message: String },
    /// Not sent because an earlier record of its group is not there.
    Waiting,
    /// Not sent: preflight found its object or key field wrong in the org.
    Held { reason: String },
}

impl Created {
    pub fn id(&self) -> Option<&str> {
        match self {
            Created::New { id } | Created::Existing { id } => Some(id),
            _ => None,
        }
    }
}

/// The records of a group, in its order.
#[derive(Debug, Clone)]
pub struct GroupResult {
    pub made: Vec<Created>,
}

impl GroupResult {
    /// Every record exists.
    pub fn complete(&self) -> bool {
        self.made.iter().all(|c| c.id().is_some())
    }

    pub fn ids(&self) -> Vec<String> {
        self.made.iter().filter_map(|c| c.id().map(str::to_owned)).collect()
    }
}

/// Salesforce calls that making the first `n` groups takes: per record position and object,
/// one call per 200 records where the key is unique (`unique(object, key field)`), and one key
/// look-up and one upsert per 200 where it is not. (Keys found to exist on insert cost one more
/// look-up per 200: a rare case, settled on the ledger as spent.)
pub fn calls_for(groups: &[Group], n: usize, unique: &dyn Fn(&str, &str) -> bool) -> u64 {
    let mut per: BTreeMap<(usize, &str, &str), u64> = BTreeMap::new();
    for g in &groups[..n.min(groups.len())] {
        for (p, r) in g.records.iter().enumerate() {
            *per.entry((p, r.object.as_str(), r.key_field.as_str())).or_default() += 1;
        }
    }
    per.iter().map(|((_, o, f), n)| if unique(o, f) { 1 } else { 2 } * n.div_ceil(BATCH as u64)).sum()
}

/// How many of `groups`, in order, fit in `allowance` calls.
pub fn fitting(groups: &[Group], allowance: u64, unique: &dyn Fn(&str, &str) -> bool) -> usize {
    // calls_for grows with n, so the largest n that fits is found by bisection.
    let (mut lo, mut hi) = (0, groups.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if calls_for(groups, mid, unique) <= allowance { lo = mid } else { hi = mid - 1 }
    }
    lo
}

/// The planning estimate before preflight has said which keys are unique: the dearer path.
pub fn not_unique(_: &str, _: &str) -> bool {
    false
}

/// Makes `groups` within `allowance` calls: preflight first (fields with problems left out,
/// groups it cannot make held back), then what fits is reserved in the shared ledger, sent and
/// settled there; the rest is deferred. Results come back in input order; the preflight's
/// problems go into `report`.
///
/// # Errors
/// Store failures, and a describe that failed; Salesforce refusals and deferrals come back per
/// record.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn deliver(
    ctx: &Context,
    workflow: &Workflow,
    groups: &[Group],
    allowance: u64,
    budget: &BudgetReport,
    meter: &mut Meter<'_>,
    report: &mut RunReport,
    now: DateTime<Utc>,
) -> Result<Vec<GroupResult>, RunError> {
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let before = ctx.salesforce.requests_sent();
    let quarantine = preflight::run(&ctx.salesforce, &ctx.config, workflow).await?;
    meter.step("preflight", Some("preflight"));
    let allowance = allowance.saturating_sub(ctx.salesforce.requests_sent().saturating_sub(before));
    report.preflight.problems = quarantine.problems().to_vec();
    deliver_checked(ctx, workflow, groups, &quarantine, allowance, budget, meter, report, now).await
}

/// [`deliver`] for a template that ran preflight itself (it also updates records, and checks
/// the config against the org once for both stages).
///
/// # Errors
/// As [`deliver`].
#[allow(clippy::too_many_arguments)]
pub(crate) async fn deliver_checked(
    ctx: &Context,
    workflow: &Workflow,
    groups: &[Group],
    quarantine: &Quarantine,
    allowance: u64,
    budget: &BudgetReport,
    meter: &mut Meter<'_>,
    report: &mut RunReport,
    now: DateTime<Utc>,
) -> Result<Vec<GroupResult>, RunError> {
    let mut results: Vec<GroupResult> =
        groups.iter().map(|g| GroupResult { made: vec![Created::Waiting; g.records.len()] }).collect();
    if groups.is_empty() {
        return Ok(results);
    }
    // Held groups stay in place (so results keep input order) but are neither counted nor sent.
    let mut sendable: Vec<usize> = Vec::new();
    let mut cleaned: Vec<Group> = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        let held = group.records.iter().find_map(|r| {
            quarantine.holds(&r.object, &r.key_field).then(|| {
                quarantine.reason(&r.object, &r.key_field).unwrap_or_else(|| format!("{} cannot be made", r.object))
            })
        });
        match held {
            Some(reason) => {
                results[g].made.fill(Created::Held { reason });
                report.preflight.records_held_back += 1;
            }
            None => {
                let mut group = group.clone();
                for r in &mut group.records {
                    quarantine.strip(&r.object, &mut r.fields);
                }
                sendable.push(g);
                cleaned.push(group);
            }
        }
    }
    let unique = |o: &str, f: &str| quarantine.unique_key(o, f);
    let send = fitting(&cleaned, allowance, &unique);
    let reserve = calls_for(&cleaned, send, &unique);
    let day = now.date_naive();
    let reserved = reserve > 0 && ctx.store.reserve_budget(day, &workflow.name, reserve, budget.cap, now).await?;
    let send = if reserved { send } else { 0 };
    for &g in &sendable[send..] {
        results[g].made.fill(Created::Deferred { message: "over the API budget: made in a later run".into() });
    }
    testhook::crash_point("plan");
    if send == 0 {
        return Ok(results);
    }
    let before = ctx.salesforce.requests_sent();
    let mut sent: Vec<GroupResult> = sendable[..send].iter().map(|&g| results[g].clone()).collect();
    let outcome = send_groups(ctx, &workflow.name, &cleaned[..send], &mut sent, quarantine, now).await;
    let spent = ctx.salesforce.requests_sent().saturating_sub(before);
    ctx.store.settle_budget(day, &workflow.name, reserve, spent, now).await?;
    meter.step("create", Some("create"));
    meter.settled += spent;
    outcome?;
    for (&g, r) in sendable.iter().zip(sent) {
        results[g] = r;
    }
    if let Some(run) = report.run_id {
        report.verify =
            verify_made(ctx, workflow, &cleaned[..send], &sendable, &results, budget, meter, run, now).await?;
    }
    Ok(results)
}

/// Makes single `records` for an event-driven batch (the NPS consumer: no run plans its calls
/// ahead, they are settled on the ledger afterwards), by the same exactly-once, adopt-never-
/// overwrite path as [`deliver`]. A record whose object or key field preflight holds comes back
/// `Held`; fields with a problem are left out; a spent allocation defers what was not sent.
///
/// # Errors
/// Store failures.
pub(crate) async fn make(
    ctx: &Context,
    workflow: &str,
    records: &[NewRecord],
    quarantine: &Quarantine,
    now: DateTime<Utc>,
) -> Result<Vec<Created>, RunError> {
    let mut out: Vec<Created> = vec![Created::Waiting; records.len()];
    let mut send: Vec<usize> = Vec::new();
    let mut cleaned: Vec<NewRecord> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        if quarantine.holds(&r.object, &r.key_field) {
            let reason =
                quarantine.reason(&r.object, &r.key_field).unwrap_or_else(|| format!("{} cannot be made", r.object));
            out[i] = Created::Held { reason };
            continue;
        }
        let mut r = r.clone();
        quarantine.strip(&r.object, &mut r.fields);
        send.push(i);
        cleaned.push(r);
    }
    let mut stopped = None;
    let made = create_many(ctx, workflow, &cleaned, quarantine, now, &mut stopped).await?;
    for (i, c) in send.into_iter().zip(made) {
        out[i] = c;
    }
    Ok(out)
}

/// Reads back the records this run made (not those adopted: usagesync set nothing on them),
/// per object, comparing the fields it set on create: its own, the key and the group link.
#[allow(clippy::too_many_arguments)]
async fn verify_made(
    ctx: &Context,
    workflow: &Workflow,
    groups: &[Group],
    sendable: &[usize],
    results: &[GroupResult],
    budget: &BudgetReport,
    meter: &mut Meter<'_>,
    run: crate::store::RunId,
    now: DateTime<Utc>,
) -> Result<VerifyReport, RunError> {
    let mut by_object: BTreeMap<&str, Vec<Written<'_>>> = BTreeMap::new();
    for (group, &g) in groups.iter().zip(sendable) {
        let made = &results[g].made;
        for (record, created) in group.records.iter().zip(made) {
            let Created::New { id } = created else { continue };
            let mut fields: Vec<(FieldName, Value)> =
                record.fields.iter().map(|(f, v)| (f.as_str().into(), v.clone())).collect();
            fields.push((record.key_field.as_str().into(), Value::String(record.key.clone())));
            if let Some(link) = &record.link
                && let Some(to) = made.get(link.to).and_then(Created::id)
            {
                fields.push((link.field.as_str().into(), Value::String(to.to_owned())));
            }
            let written = Written { key: (&group.subject).into(), salesforce_id: id.into(), fields: fields.into() };
            by_object.entry(record.object.as_str()).or_default().push(written);
        }
    }
    let mut report = VerifyReport::default();
    for (object, written) in by_object {
        report.merge(verify::verify(ctx, &workflow.name, object, &written, budget, meter, run, now).await?);
    }
    Ok(report)
}

async fn send_groups(
    ctx: &Context,
    workflow: &str,
    groups: &[Group],
    results: &mut [GroupResult],
    quarantine: &Quarantine,
    now: DateTime<Utc>,
) -> Result<(), RunError> {
    let longest = groups.iter().map(|g| g.records.len()).max().unwrap_or(0);
    let mut stopped: Option<String> = None;
    for position in 0..longest {
        if position > 0 {
            testhook::crash_point("group");
        }
        let mut which = Vec::new();
        let mut records = Vec::new();
        for (g, group) in groups.iter().enumerate() {
            let Some(record) = group.records.get(position) else { continue };
            if results[g].made[..position].iter().any(|c| c.id().is_none()) {
                continue;
            }
            if let Some(message) = &stopped {
                results[g].made[position] = Created::Deferred { message: message.clone() };
                continue;
            }
            let mut record = record.clone();
            if let Some(link) = &record.link
                && let Some(id) = results[g].made.get(link.to).and_then(Created::id)
            {
                record.fields.insert(link.field.clone(), Value::String(id.to_owned()));
            }
            which.push(g);
            records.push(record);
        }
        let made = create_many(ctx, workflow, &records, quarantine, now, &mut stopped).await?;
        for (g, c) in which.into_iter().zip(made) {
            results[g].made[position] = c;
        }
    }
    Ok(())
}

/// Makes `records` (see the module docs), in input order. A spent allocation sets `stopped` and
/// defers everything not yet sent.
async fn create_many(
    ctx: &Context,
    workflow: &str,
    records: &[NewRecord],
    quarantine: &Quarantine,
    now: DateTime<Utc>,
    stopped: &mut Option<String>,
) -> Result<Vec<Created>, RunError> {
    let store = ctx.store.as_ref();
    let unique = |r: &NewRecord| quarantine.unique_key(&r.object, &r.key_field);
    let mut out: Vec<Option<Created>> = vec![None; records.len()];
    let (mut look_up, mut insert) = (Vec::new(), Vec::new());
    // One transaction for every key, not one per record.
    let keys: Vec<String> = records.iter().map(|r| r.key.clone()).collect();
    let states = store.begin_creates(&keys, workflow, now).await?;
    for ((i, r), state) in records.iter().enumerate().zip(states) {
        match state {
            CreateState::Committed { salesforce_id } => out[i] = Some(Created::Existing { id: salesforce_id }),
            // A new key on a unique field: Salesforce refuses it if it exists after all.
            CreateState::New if unique(r) => insert.push(i),
            CreateState::Pending { .. } | CreateState::New => look_up.push(i),
        }
    }
    let not_found = adopt(ctx, records, &look_up, now, stopped, &mut out).await?;
    let mut upsert = Vec::new();
    for i in not_found {
        if unique(&records[i]) { insert.push(i) } else { upsert.push(i) }
    }
    insert.sort_unstable();
    let mut duplicates = Vec::new();
    for (insert, list) in [(true, insert), (false, upsert)] {
        for (object, chunk) in by_object(records, &list) {
            if let Some(message) = stopped.as_ref() {
                for &i in &chunk {
                    store.abandon_create(&records[i].key).await?;
                    out[i] = Some(Created::Deferred { message: message.clone() });
                }
                continue;
            }
            let key_field = &records[chunk[0]].key_field;
            let bodies: Vec<Map<String, Value>> = chunk
                .iter()
                .map(|&i| {
                    let mut body = records[i].fields.clone();
                    body.insert(records[i].key_field.clone(), Value::String(records[i].key.clone()));
                    body
                })
                .collect();
            let result = if insert {
                ctx.salesforce.create_many(object, &bodies, false).await
            } else {
                ctx.salesforce.upsert_many(object, key_field, &bodies, false).await
            };
            testhook::crash_point("create");
            let results = match result {
                Ok(results) => results,
                Err(e) => {
                    let failed = request_failed(&e, "creating", stopped);
                    for &i in &chunk {
                        if !matches!(failed, Created::Unknown { .. }) {
                            store.abandon_create(&records[i].key).await?;
                        }
                        out[i] = Some(failed.clone());
                    }
                    continue;
                }
            };
            let mut committed: Vec<(String, String)> = Vec::new();
            for (&i, r) in chunk.iter().zip(results) {
                let key = &records[i].key;
                let error = r.errors.first();
                out[i] = Some(match (r.success, r.id) {
                    (true, Some(id)) => {
                        let id = id.to_string();
                        committed.push((key.clone(), id.clone()));
                        if r.created == Some(false) { Created::Existing { id } } else { Created::New { id } }
                    }
                    (true, None) => Created::Unknown { message: "saved without an id".into() },
                    // Someone's record already holds the key: found and adopted below.
                    (false, _) if insert && error.is_some_and(|e| e.status_code == ErrorCode::DuplicateValue) => {
                        duplicates.push(i);
                        continue;
                    }
                    (false, _) => {
                        store.abandon_create(key).await?;
                        let (code, message) = error
                            .map(|e| (e.status_code.as_str().to_owned(), e.message.clone()))
                            .unwrap_or_else(|| ("UNKNOWN".into(), "refused without an error".into()));
                        Created::Refused { code, message }
                    }
                });
            }
            // Salesforce has these: their keys are committed together, one transaction.
            store.commit_creates(workflow, &committed, now).await?;
        }
    }
    // A duplicate not found by its key is a clash on some other unique field: refused.
    for i in adopt(ctx, records, &duplicates, now, stopped, &mut out).await? {
        store.abandon_create(&records[i].key).await?;
        out[i] = Some(Created::Refused {
            code: "DUPLICATE_VALUE".into(),
            message: "Salesforce refused the record as a duplicate, and no record holds its key".into(),
        });
    }
    Ok(out.into_iter().map(|c| c.unwrap_or(Created::Waiting)).collect())
}

/// Looks the keys of `which` up, 200 per query, and adopts the records found (committed in the
/// store, nothing written to them); returns those not found.
async fn adopt(
    ctx: &Context,
    records: &[NewRecord],
    which: &[usize],
    now: DateTime<Utc>,
    stopped: &mut Option<String>,
    out: &mut [Option<Created>],
) -> Result<Vec<usize>, RunError> {
    let mut not_found = Vec::new();
    for (object, chunk) in by_object(records, which) {
        if let Some(message) = stopped.as_ref() {
            for i in chunk {
                out[i] = Some(Created::Deferred { message: message.clone() });
            }
            continue;
        }
        match find_many(&ctx.salesforce, object, records, &chunk).await {
            Ok(found) => {
                for i in chunk {
                    match found.get(&records[i].key.to_lowercase()) {
                        Some(id) => {
                            ctx.store.commit_create(&records[i].key, id, now).await?;
                            out[i] = Some(Created::Existing { id: id.clone() });
                        }
                        None => not_found.push(i),
                    }
                }
            }
            Err(e) => {
                let failed = request_failed(&e, "looking the keys up before creating", stopped);
                for i in chunk {
                    out[i] = Some(failed.clone());
                }
            }
        }
    }
    Ok(not_found)
}

/// What a request-level failure means for the records it carried; a spent allocation also
/// stops everything after it.
fn request_failed(e: &salesforce::Error, doing: &str, stopped: &mut Option<String>) -> Created {
    if e.retry_class() == RetryClass::NotNow {
        let message = format!("the API allocation is spent ({e}): made in a later run");
        *stopped = Some(message.clone());
        return Created::Deferred { message };
    }
    if e.may_have_committed() {
        return Created::Unknown { message: format!("{doing}: {e}") };
    }
    let (code, message) = match e.as_api() {
        Some(api) => (api.error_code.as_str().to_owned(), api.message.clone()),
        None => ("REQUEST_FAILED".to_owned(), format!("{doing}: {e}")),
    };
    Created::Refused { code, message }
}

/// `which` split into chunks of at most [`BATCH`] of one object and key field, in order.
fn by_object<'a>(records: &'a [NewRecord], which: &[usize]) -> Vec<(&'a str, Vec<usize>)> {
    let mut groups: Vec<(&str, &str, Vec<usize>)> = Vec::new();
    for &i in which {
        let r = &records[i];
        match groups.iter_mut().find(|(o, f, _)| *o == r.object && *f == r.key_field) {
            Some((_, _, list)) => list.push(i),
            None => groups.push((&r.object, &r.key_field, vec![i])),
        }
    }
    groups
        .into_iter()
        .flat_map(|(object, _, list)| list.chunks(BATCH).map(|c| (object, c.to_vec())).collect::<Vec<_>>())
        .collect()
}

/// Lower-cased key → Id of the records among `which` (one object and key field) that exist.
/// Keys compare case-insensitively, as Salesforce compares external IDs.
async fn find_many(
    client: &salesforce::Client,
    object: &str,
    records: &[NewRecord],
    which: &[usize],
) -> Result<HashMap<String, String>, salesforce::Error> {
    let field = &records[which[0]].key_field;
    salesforce::soql::object(object)?;
    salesforce::soql::field(field)?;
    let list = which.iter().map(|&i| salesforce::soql::quote(&records[i].key)).collect::<Vec<_>>().join(", ");
    let rows: Vec<Value> =
        client.query_collect(format!("SELECT Id, {field} FROM {object} WHERE {field} IN ({list})")).await?;
    let mut found = HashMap::new();
    for r in rows {
        if let (Some(id), Some(key)) = (r.get("Id").and_then(Value::as_str), r.get(field).and_then(Value::as_str)) {
            found.insert(key.to_lowercase(), id.to_owned());
        }
    }
    Ok(found)
}

/// History rows for `groups` and the run's counts: a complete group is written (unchanged when
/// every record of it was already there), one with a spent budget deferred, any other failed
/// (with the first refusal's code).
pub(crate) fn history(groups: &[Group], results: &[GroupResult], report: &mut RunReport) -> Vec<RecordOutcome> {
    let mut out = Vec::new();
    for (g, r) in groups.iter().zip(results) {
        for (record, made) in g.records.iter().zip(&r.made) {
            if let Some(id) = made.id() {
                let how =
                    if matches!(made, Created::Existing { .. }) { "already there, adopted unchanged" } else { "made" };
                out.push(RecordOutcome {
                    object: record.object.clone(),
                    key: g.subject.clone(),
                    salesforce_id: Some(id.to_owned()),
                    action: Action::Created,
                    changes: record
                        .fields
                        .iter()
                        .map(|(f, v)| FieldChange { field: f.clone(), before: None, after: v.clone() })
                        .collect(),
                    error_code: None,
                    message: Some(format!("{}; key {} ({how})", g.note, record.key)),
                });
            }
        }
        if r.complete() {
            // A group found whole (after a lost store, or a create whose answer was lost) wrote
            // nothing: it is not counted as written.
            if r.made.iter().all(|c| matches!(c, Created::Existing { .. })) {
                report.unchanged += 1;
            } else {
                report.written += 1;
            }
            continue;
        }
        let unmade = g.records.iter().zip(&r.made).find(|(_, c)| c.id().is_none() && **c != Created::Waiting);
        let Some((record, made)) = unmade else { continue };
        let (action, code, message) = match made {
            Created::Held { reason } => {
                out.push(RecordOutcome {
                    object: record.object.clone(),
                    key: g.subject.clone(),
                    salesforce_id: Some(g.account_id.clone()),
                    action: Action::Skipped,
                    changes: vec![],
                    error_code: Some("QUARANTINED".into()),
                    message: Some(format!("held back by preflight: {reason}; {}", g.note)),
                });
                continue;
            }
            Created::Deferred { message } => (Action::Deferred, None, message.clone()),
            Created::Refused { code, message } => (Action::Failed, Some(code.clone()), message.clone()),
            Created::Unknown { message } => (Action::Failed, Some("OUTCOME_UNKNOWN".to_owned()), message.clone()),
            Created::New { .. } | Created::Existing { .. } | Created::Waiting => continue,
        };
        match &code {
            None => report.deferred += 1,
            Some(code) => {
                report.failed += 1;
                if report.failures.len() < 10 {
                    report.failures.push(FailureSample {
                        salesforce_id: g.account_id.clone(),
                        code: code.clone(),
                        message: message.clone(),
                    });
                }
            }
        }
        let then = if code.is_some() { "retried next run" } else { "sent next run" };
        out.push(RecordOutcome {
            object: record.object.clone(),
            key: g.subject.clone(),
            salesforce_id: Some(g.account_id.clone()),
            action,
            changes: vec![],
            error_code: code,
            message: Some(format!("{message}; {then}; {}", g.note)),
        });
    }
    out
}

/// The ledger of `groups`: every record made (by its key), and every record Salesforce refused
/// or whose outcome is unknown. A deferred, held or waiting record is no failure: the next run
/// sends it, since its episode or count is stored only once the group is complete.
pub(crate) fn ledger(groups: &[Group], results: &[GroupResult]) -> super::ledger::Ledger {
    let mut ledger = super::ledger::Ledger::default();
    for (g, r) in groups.iter().zip(results) {
        for (record, made) in g.records.iter().zip(&r.made) {
            let (code, message) = match made {
                Created::New { .. } | Created::Existing { .. } => {
                    ledger.written(&record.object, &record.key);
                    continue;
                }
                Created::Refused { code, message } => (code.clone(), message.clone()),
                Created::Unknown { message } => ("OUTCOME_UNKNOWN".to_owned(), message.clone()),
                Created::Deferred { .. } | Created::Waiting | Created::Held { .. } => continue,
            };
            ledger.refused(super::ledger::Refusal {
                object: record.object.clone(),
                key: record.key.clone(),
                salesforce_id: Some(g.account_id.clone()),
                payload: Value::Object(record.fields.clone()),
                code,
                message: format!("{message}; {}", g.note),
                fields: record.fields.keys().cloned().collect(),
            });
        }
    }
    ledger
}

/// Characters of a key's readable part: what an external-ID value and a URL segment take
/// without surprises.
fn readable(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// A key for the record identified by `parts`: a readable part (the parts with every other
/// character as `_`, cut to fit) and a hash of the exact parts. Two different part lists give
/// two keys that differ even case-insensitively, as Salesforce compares external IDs (`acme co`
/// and `acme_co`, `CaseTest` and `casetest` are different accounts).
pub fn key(parts: &[&str]) -> String {
    let clean = |p: &str| -> String { p.chars().map(|c| if readable(c) { c } else { '_' }).collect() };
    let mut readable_part = parts.iter().map(|p| clean(p)).collect::<Vec<_>>().join(":");
    readable_part.truncate(200);
    // Length-prefixed, so ["a:b"] and ["a", "b"] hash differently.
    let exact: String = parts.iter().map(|p| format!("{}:{p}", p.len())).collect();
    let digest = crate::change::fingerprint(&Value::String(exact));
    format!("{readable_part}~{digest:016x}")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn keys_are_stable_readable_and_bounded() {
        let k = key(&["drop", "acme co/1", "3"]);
        assert!(k.starts_with("drop:acme_co_1:3~"), "{k}");
        assert_eq!(k, key(&["drop", "acme co/1", "3"]));
        let long = "x".repeat(400);
        let k = key(&["drop", &long]);
        assert!(k.len() <= 255);
        assert_ne!(k, key(&["drop", &"x".repeat(399)]));
    }

    #[test]
    fn accounts_whose_ids_clean_or_fold_alike_get_different_keys() {
        let keys: Vec<String> =
            ["acme co", "acme_co", "acme/co", "CaseTest", "casetest"].iter().map(|a| key(&["t", a, "1"])).collect();
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert!(!a.eq_ignore_ascii_case(b), "{a} vs {b}");
            }
        }
    }

    proptest! {
        #[test]
        fn different_parts_never_share_a_key(a in proptest::collection::vec(".{0,12}", 1..4),
                                             b in proptest::collection::vec(".{0,12}", 1..4)) {
            prop_assume!(a != b);
            let ka = key(&a.iter().map(String::as_str).collect::<Vec<_>>());
            let kb = key(&b.iter().map(String::as_str).collect::<Vec<_>>());
            prop_assert!(!ka.eq_ignore_ascii_case(&kb), "{} vs {}", ka, kb);
            prop_assert!(ka.len() <= 255);
        }
    }

    fn group(objects: &[&str]) -> Group {
        Group {
            subject: "p".into(),
            account_id: "001".into(),
            note: String::new(),
            records: objects
                .iter()
                .map(|o| NewRecord {
                    object: (*o).into(),
                    key: "k".into(),
                    key_field: "K__c".into(),
                    fields: Map::new(),
                    link: None,
                })
                .collect(),
        }
    }

    #[test]
    fn the_budget_counts_one_insert_or_a_look_up_and_an_upsert_per_200_records_of_each_object() {
        let groups: Vec<Group> = (0..401).map(|_| group(&["Opportunity", "Task"])).collect();
        let dear = not_unique;
        assert_eq!(calls_for(&groups, 0, &dear), 0);
        assert_eq!(calls_for(&groups, 1, &dear), 4);
        assert_eq!(calls_for(&groups, 200, &dear), 4);
        assert_eq!(calls_for(&groups, 201, &dear), 8);
        assert_eq!(calls_for(&groups, 401, &dear), 12);
        assert_eq!(fitting(&groups, 3, &dear), 0);
        assert_eq!(fitting(&groups, 4, &dear), 200);
        assert_eq!(fitting(&groups, 11, &dear), 400);
        assert_eq!(fitting(&groups, 1000, &dear), 401);
        // Unique Task keys: Tasks are inserted, one call per 200; Opportunities still looked up.
        let tasks_unique = |o: &str, _: &str| o == "Task";
        assert_eq!(calls_for(&groups, 200, &tasks_unique), 3);
        assert_eq!(calls_for(&groups, 401, &tasks_unique), 9);
        assert_eq!(fitting(&groups, 3, &tasks_unique), 200);
    }

    #[test]
    fn history_reports_a_group_by_its_first_missing_record() {
        let groups = vec![group(&["Opportunity", "Task"]); 3];
        let results = vec![
            GroupResult { made: vec![Created::New { id: "006a".into() }, Created::Existing { id: "00Ta".into() }] },
            GroupResult {
                made: vec![
                    Created::Existing { id: "006b".into() },
                    Created::Refused { code: "FIELD_INTEGRITY_EXCEPTION".into(), message: "bad".into() },
                ],
            },
            GroupResult { made: vec![Created::Deferred { message: "spent".into() }, Created::Waiting] },
        ];
        let mut report = super::super::tests::empty_report();
        let rows = history(&groups, &results, &mut report);
        assert_eq!((report.written, report.failed, report.deferred), (1, 1, 1));
        let actions: Vec<(String, Action)> = rows.iter().map(|r| (r.object.clone(), r.action)).collect();
        assert_eq!(
            actions,
            vec![
                ("Opportunity".into(), Action::Created),
                ("Task".into(), Action::Created),
                ("Opportunity".into(), Action::Created),
                ("Task".into(), Action::Failed),
                ("Opportunity".into(), Action::Deferred),
            ]
        );
        assert_eq!(report.failures[0].code, "FIELD_INTEGRITY_EXCEPTION");
    }
}
