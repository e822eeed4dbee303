//! Verify after write: the pipeline stage that reads back what a run just wrote and reports
//! drift, so a run never succeeds silently.
//!
//! This module owns the read-back and its verdict. After a write stage has delivered, it picks
//! a deterministic sample of the records written to one object (all of them on request), reads
//! them by the cheaper of two reads: one SOQL query per 200 Ids (`SELECT Id, <fields>,
//! LastModifiedById, LastModifiedDate … WHERE Id IN (…)`), or, when a run wrote most of an
//! object (`all: true` over a large run), the whole object's query pages of up to 2,000 rows
//! each (the first page says how many there are; its rows are used either way). It compares
//! each field with the value sent, normalised the way Salesforce returns values (numbers at the
//! field's scale, dates as `YYYY-MM-DD`, date-times to the second in UTC, checkbox null as
//! false, an empty string as null). A value that differs is drift: a trigger, a workflow rule,
//! a person or another integration changed it since; a record no longer found was deleted.
//!
//! Drift never fails a run (Salesforce accepted what was sent) and never makes usagesync write
//! again (that would overwrite whoever changed it); it is reported in the run report and
//! recorded in history as `drifted` rows, each with the value sent, the value now, who changed
//! the record last and when. The read is an API call like any other: reserved in the shared
//! budget first, settled after, counted under its own kind `verify`; a spent allocation (or any
//! failed read) skips the check with a note instead of failing the run.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use salesforce::{FieldDescribe, RetryClass, SObjectDescribe};
use serde::Serialize;
use serde_json::Value;

use crate::config::Verify;
use crate::store::{Action, FieldChange, RecordOutcome, RunId};
use crate::workflow::{BudgetReport, Context, Meter, RunError};

/// Ids per read-back query: what an `IN (…)` list of one query is kept to, as for key look-ups.
pub const BATCH: usize = 200;
/// Drifted values kept in a report (all are counted, and all are in history).
pub const KEPT: usize = 50;

/// One record as it was written: the values usagesync sent. Borrowed where the caller still
/// holds them (the update stage's changes), so the read-back adds no copy of a run's records.
#[derive(Debug, Clone, PartialEq)]
pub struct Written<'a> {
    /// The source key (the Pendo account, say), the key of history rows.
    pub key: Cow<'a, str>,
    pub salesforce_id: Cow<'a, str>,
    pub fields: Cow<'a, [(crate::change::FieldName, Value)]>,
}

/// What the read-back found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Records read back.
    pub checked: usize,
    /// Records written, the sample's population.
    pub sampled_from: usize,
    /// Values found changed since they were written (deleted records count one each).
    pub values_changed: usize,
    /// Records among those that no longer exist.
    pub records_gone: usize,
    /// Who changed them last (a User Id) → values.
    pub changed_by: BTreeMap<String, usize>,
    /// The first [`KEPT`] drifted values.
    pub drift: Vec<Drift>,
    /// usagesync's own user: drift by it is automation that ran on usagesync's save (a trigger,
    /// a workflow field update, a flow) or another integration sharing the user.
    pub own_user: Option<String>,
    /// Why the read-back was skipped or cut short, when it was.
    pub note: Option<String>,
}

/// A value that is not what usagesync wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drift {
    pub object: String,
    pub salesforce_id: String,
    /// The field; `Id` for a record that no longer exists.
    pub field: String,
    pub sent: Value,
    /// What the record holds now (null for a deleted record).
    pub now: Value,
    pub last_modified_by: Option<String>,
    pub last_modified_at: Option<String>,
}

impl VerifyReport {
    /// Folds in the report of another object of the same run.
    pub fn merge(&mut self, other: VerifyReport) {
        self.checked += other.checked;
        self.sampled_from += other.sampled_from;
        self.values_changed += other.values_changed;
        self.records_gone += other.records_gone;
        for (who, n) in other.changed_by {
            *self.changed_by.entry(who).or_default() += n;
        }
        let room = KEPT.saturating_sub(self.drift.len());
        self.drift.extend(other.drift.into_iter().take(room));
        self.own_user = self.own_user.take().or(other.own_user);
        self.note = match (self.note.take(), other.note) {
            (Some(a), Some(b)) if a != b => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        };
    }

    fn add(&mut self, drift: Drift) {
        self.values_changed += 1;
        if let Some(who) = &drift.last_modified_by {
            *self.changed_by.entry(who.clone()).or_default() += 1;
        }
        if self.drift.len() < KEPT {
            self.drift.push(drift);
        }
    }
}

/// Reads back the records of `object` in `written` (as many as `setting` asks for), records the
/// drift as history rows of `run`, and reports it. `seed` makes the sample differ from run to
/// run while staying the same within one.
///
/// # Errors
/// Only store failures; a read that failed (or could not be afforded) is a note in the report.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn verify(
    ctx: &Context,
    workflow: &str,
    object: &str,
    written: &[Written<'_>],
    budget: &BudgetReport,
    meter: &mut Meter<'_>,
    run: RunId,
    now: DateTime<Utc>,
) -> Result<VerifyReport, RunError> {
    let mut report = VerifyReport { sampled_from: written.len(), ..VerifyReport::default() };
    let size = match ctx.config.verify_for(workflow) {
        Verify::Off => 0,
        Verify::Sample(n) => n,
        Verify::All => written.len(),
    };
    let mut picked = sample(written, size, &run.to_string());
    if picked.is_empty() {
        return Ok(report);
    }
    report.own_user = ctx.salesforce.current_token().map(|t| t.identity.user_id.to_string());
    // `available` was measured after the /limits read: every call the run made since comes off
    // it (its reads are settled on the ledger only when the run closes).
    let used: u64 = meter.calls.iter().filter(|(k, _)| k.as_str() != "read_limits").map(|(_, n)| n).sum();
    let room = budget.available.saturating_sub(used);
    if room < max_calls(picked.len()) {
        if room == 0 {
            report.note = Some("not verified: this run's share of the API budget is spent".into());
            return Ok(report);
        }
        let mut fits = usize::try_from(room).unwrap_or(usize::MAX).saturating_mul(BATCH);
        while max_calls(fits) > room {
            fits -= BATCH;
        }
        report.note =
            Some(format!("{} of {} records read back: the API budget had room for {room} queries", fits, picked.len()));
        picked = sample(written, fits, &run.to_string());
    }
    let day = now.date_naive();
    let reserve = max_calls(picked.len());
    if !ctx.store.reserve_budget(day, workflow, reserve, budget.cap, now).await? {
        report.note = Some("not verified: the API budget has no room for the read-back".into());
        return Ok(report);
    }
    let before = ctx.salesforce.requests_sent();
    let describe = ctx.salesforce.describe_cached(object);
    let records: Vec<&Written<'_>> = picked.iter().map(|&i| &written[i]).collect();
    let (read, failure) = read(&ctx.salesforce, object, &records).await;
    let mut outcomes = Vec::new();
    for (record, found) in records.iter().zip(&read) {
        // `None`: not read (the read failed first); `Some(None)`: read, and not there.
        let Some(found) = found else { continue };
        report.checked += 1;
        let drifts = compare(object, record, found.as_ref(), describe.as_deref());
        if found.is_none() {
            report.records_gone += 1;
        }
        if let Some(row) = outcome(object, record, &drifts, found.is_none()) {
            outcomes.push(row);
        }
        for d in drifts {
            report.add(d);
        }
    }
    if let Some(e) = failure {
        let why = if e.retry_class() == RetryClass::NotNow {
            format!("the API allocation is spent ({e})")
        } else {
            format!("reading {object} back failed ({e})")
        };
        tracing::warn!(workflow, object, error = %e, "Verification cut short");
        let unchecked = picked.len() - report.checked;
        report.note = Some(format!("not verified: {why}; {unchecked} records unchecked"));
    }
    let spent = ctx.salesforce.requests_sent().saturating_sub(before);
    ctx.store.settle_budget(day, workflow, reserve, spent, now).await?;
    meter.step("verify", Some("verify"));
    meter.settled += spent;
    if !outcomes.is_empty() {
        ctx.store.record_outcomes(run, &outcomes, &[]).await?;
    }
    Ok(report)
}

/// Indices into `written` of the records to read back: all when `size` covers them, else the
/// `size` whose Ids hash lowest with `seed` (a spread over the whole run, not its first
/// accounts, and the same for the same seed), in input order.
pub fn sample(written: &[Written<'_>], size: usize, seed: &str) -> Vec<usize> {
    if size >= written.len() {
        return (0..written.len()).collect();
    }
    let mut order: Vec<(u64, usize)> = written
        .iter()
        .enumerate()
        .map(|(i, w)| (crate::change::fingerprint(&Value::String(format!("{seed}:{}", w.salesforce_id))), i))
        .collect();
    order.sort_unstable();
    let mut picked: Vec<usize> = order.into_iter().take(size).map(|(_, i)| i).collect();
    picked.sort_unstable();
    picked
}

/// The 18-character form of an Id (what queries return), or the text as given.
fn canonical(id: &str) -> String {
    salesforce::SalesforceId::parse(id).map_or_else(|_| id.to_owned(), |i| i.as_str().to_owned())
}

/// The row of each record (`Some(None)`: not there) by the cheaper read: one `Id IN` query per
/// [`BATCH`] records, or, when that takes more calls than paging through the whole object, the
/// object's pages (what the first page's `totalSize` tells). A failure stops the read: the
/// records not read yet come back `None`, with the error.
async fn read(
    client: &salesforce::Client,
    object: &str,
    records: &[&Written<'_>],
) -> (Vec<Option<Option<Value>>>, Option<salesforce::Error>) {
    let mut out: Vec<Option<Option<Value>>> = vec![None; records.len()];
    let select = match select(object, records) {
        Ok(s) => s,
        Err(e) => return (out, Some(e)),
    };
    let mut rows: HashMap<String, Value> = HashMap::new();
    let by_ids = records.len().div_ceil(BATCH);
    if by_ids >= SCAN_FROM {
        match scan(client, &select, by_ids, &mut rows).await {
            Ok(true) => {
                for (slot, r) in out.iter_mut().zip(records) {
                    *slot = Some(rows.remove(&canonical(&r.salesforce_id)));
                }
                return (out, None);
            }
            Ok(false) => {}
            Err(e) => return (out, Some(e)),
        }
    }
    // Records the first page of a scan brought need no query of their own.
    let mut rest = Vec::new();
    for (i, r) in records.iter().enumerate() {
        match rows.remove(&canonical(&r.salesforce_id)) {
            Some(row) => out[i] = Some(Some(row)),
            None => rest.push(i),
        }
    }
    for chunk in rest.chunks(BATCH) {
        let ids: Vec<String> = chunk.iter().map(|&i| salesforce::soql::quote(&records[i].salesforce_id)).collect();
        let soql = format!("{select} WHERE Id IN ({})", ids.join(", "));
        match client.query_collect::<Value>(soql).await {
            Ok(found) => {
                let mut found = by_id(found);
                for &i in chunk {
                    out[i] = Some(found.remove(&canonical(&records[i].salesforce_id)));
                }
            }
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// `Id IN` queries from which paging through the whole object may be cheaper.
const SCAN_FROM: usize = 3;

/// The most calls reading back `n` records takes: a query per [`BATCH`], and the first page of
/// a scan when one is tried first.
pub fn max_calls(n: usize) -> u64 {
    let queries = n.div_ceil(BATCH);
    (queries + usize::from(queries >= SCAN_FROM)) as u64
}

/// Reads the first page of every record of the object into `rows`; goes on through the other
/// pages (and answers true) only when all the pages take no more calls than `by_ids` queries.
async fn scan(
    client: &salesforce::Client,
    select: &str,
    by_ids: usize,
    rows: &mut HashMap<String, Value>,
) -> Result<bool, salesforce::Error> {
    use futures_util::StreamExt;
    let pages = client.query_pages::<Value>(select.to_owned(), salesforce::QueryOptions::default());
    let mut pages = std::pin::pin!(pages);
    let Some(first) = pages.next().await.transpose()? else { return Ok(false) };
    let per_page = first.records.len().max(1) as u64;
    let total_pages = usize::try_from(first.total_size.div_ceil(per_page)).unwrap_or(usize::MAX);
    let done = first.done;
    rows.extend(by_id(first.records));
    if done {
        return Ok(true);
    }
    if total_pages > by_ids {
        return Ok(false);
    }
    while let Some(page) = pages.next().await {
        rows.extend(by_id(page?.records));
    }
    Ok(true)
}

/// `SELECT Id, <every field sent to any of records>, LastModifiedById, LastModifiedDate FROM
/// object`, names checked.
fn select(object: &str, records: &[&Written<'_>]) -> Result<String, salesforce::Error> {
    salesforce::soql::object(object)?;
    let mut fields: Vec<&str> = Vec::new();
    for (f, _) in records.iter().flat_map(|r| r.fields.iter()) {
        let system = ["id", "lastmodifiedbyid", "lastmodifieddate"].contains(&f.to_ascii_lowercase().as_str());
        if !system && !fields.iter().any(|g| g.eq_ignore_ascii_case(f)) {
            fields.push(salesforce::soql::field(f)?);
        }
    }
    let mut list = vec!["Id"];
    list.extend(fields);
    list.extend(["LastModifiedById", "LastModifiedDate"]);
    Ok(format!("SELECT {} FROM {object}", list.join(", ")))
}

/// Rows by canonical Id.
fn by_id(rows: Vec<Value>) -> HashMap<String, Value> {
    rows.into_iter()
        .filter_map(|row| {
            let id = canonical(row.get("Id")?.as_str()?);
            Some((id, row))
        })
        .collect()
}

/// The drifted values of one record: each field whose value now is not the one sent, or the
/// record itself when `row` is `None` (it no longer exists).
pub fn compare(
    object: &str,
    written: &Written<'_>,
    row: Option<&Value>,
    describe: Option<&SObjectDescribe>,
) -> Vec<Drift> {
    let drift = |field: &str, sent: Value, now: Value| Drift {
        object: object.to_owned(),
        salesforce_id: written.salesforce_id.to_string(),
        field: field.to_owned(),
        sent,
        now,
        last_modified_by: row.and_then(|r| text(r, "LastModifiedById")),
        last_modified_at: row.and_then(|r| text(r, "LastModifiedDate")),
    };
    let Some(row) = row.and_then(Value::as_object) else {
        return vec![drift("Id", Value::String(written.salesforce_id.to_string()), Value::Null)];
    };
    let mut out = Vec::new();
    for (field, sent) in written.fields.iter() {
        // Salesforce answers with the describe's spelling of a name, whatever the query used.
        let now = row.iter().find(|(k, _)| k.eq_ignore_ascii_case(field)).map_or(&Value::Null, |(_, v)| v);
        let describe = describe.and_then(|d| d.fields.iter().find(|f| f.name.eq_ignore_ascii_case(field)));
        if !same(sent, now, describe) {
            out.push(drift(field, sent.clone(), now.clone()));
        }
    }
    out
}

fn text(row: &Value, field: &str) -> Option<String> {
    row.get(field).and_then(Value::as_str).map(str::to_owned)
}

/// Whether `now` (as Salesforce returns it) holds the value `sent`, for a field of the
/// described type (guessed from the values when the describe is not at hand).
pub fn same(sent: &Value, now: &Value, field: Option<&FieldDescribe>) -> bool {
    let kind = field.map_or_else(|| guess(sent, now), |f| f.field_type.as_str());
    match kind {
        "double" | "currency" | "percent" | "int" | "long" => {
            let scale = match kind {
                "int" | "long" => Some(0),
                _ => field.and_then(|f| f.extra.get("scale")).and_then(Value::as_u64),
            };
            match (number(sent), number(now)) {
                (Some(a), Some(b)) => close(round(a, scale), b),
                (None, None) => blank(sent) && blank(now),
                _ => false,
            }
        }
        "boolean" => truth(sent) == truth(now),
        "date" => match (date(sent), date(now)) {
            (Some(a), Some(b)) => a == b,
            _ => blank(sent) && blank(now),
        },
        "datetime" => match (datetime(sent), datetime(now)) {
            (Some(a), Some(b)) => a.timestamp() == b.timestamp(),
            _ => blank(sent) && blank(now),
        },
        "multipicklist" => {
            let set = |v: &Value| {
                let mut parts: Vec<String> =
                    v.as_str().unwrap_or("").split(';').filter(|s| !s.is_empty()).map(str::to_owned).collect();
                parts.sort_unstable();
                parts
            };
            set(sent) == set(now)
        }
        // A lookup takes a 15-character Id and answers with the 18-character one.
        "reference" | "id" => match (sent.as_str(), now.as_str()) {
            (Some(a), Some(b)) => canonical(a) == canonical(b),
            _ => blank(sent) && blank(now),
        },
        _ => match (sent, now) {
            _ if blank(sent) && blank(now) => true,
            (Value::String(a), Value::String(b)) => a == b,
            (Value::Number(_), _) | (_, Value::Number(_)) => {
                number(sent).zip(number(now)).is_some_and(|(a, b)| close(a, b))
            }
            (a, b) => a == b,
        },
    }
}

/// A field type from the two values alone: numbers, booleans, date-times and dates, else text.
fn guess(sent: &Value, now: &Value) -> &'static str {
    let both = |f: fn(&Value) -> bool| f(sent) || f(now);
    if both(Value::is_number) {
        "double"
    } else if both(Value::is_boolean) {
        "boolean"
    } else if sent.as_str().is_some_and(|s| s.len() > 10 && datetime(sent).is_some()) {
        "datetime"
    } else if sent.as_str().is_some_and(|s| s.len() == 10 && date(sent).is_some()) {
        "date"
    } else {
        "string"
    }
}

/// Salesforce keeps no empty strings: an empty text is null.
fn blank(v: &Value) -> bool {
    v.is_null() || v.as_str().is_some_and(str::is_empty)
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
        _ => None,
    }
}

/// A number at the field's scale, rounded half away from zero as Salesforce rounds on save.
fn round(x: f64, scale: Option<u64>) -> f64 {
    match scale.and_then(|s| i32::try_from(s).ok()) {
        Some(s) if s <= 15 => {
            let p = 10f64.powi(s);
            (x * p).round() / p
        }
        _ => x,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// A checkbox is never null in Salesforce: null means unchecked.
fn truth(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Null => Some(false),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") || s.is_empty() => Some(false),
        _ => None,
    }
}

/// A date, or the date part of a date-time (what a date field keeps of one).
fn date(v: &Value) -> Option<NaiveDate> {
    let s = v.as_str()?.trim();
    NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok()
}

/// A date-time in UTC, from RFC 3339 (`Z` or `+hh:mm`), Salesforce's `+0000` form, or a time
/// with no zone (taken as UTC, as Salesforce takes it).
fn datetime(v: &Value) -> Option<DateTime<Utc>> {
    let s = v.as_str()?.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|t| t.and_utc())
}

/// The history row of a record with drift: every drifted field as sent → now.
fn outcome(object: &str, written: &Written<'_>, drifts: &[Drift], gone: bool) -> Option<RecordOutcome> {
    let first = drifts.first()?;
    let message = if gone {
        "the record no longer exists (deleted or merged since usagesync wrote it)".to_owned()
    } else {
        format!(
            "changed since usagesync wrote it; last modified by {} at {}",
            first.last_modified_by.as_deref().unwrap_or("(unknown)"),
            first.last_modified_at.as_deref().unwrap_or("(unknown)")
        )
    };
    Some(RecordOutcome {
        object: object.to_owned(),
        key: written.key.to_string(),
        salesforce_id: Some(written.salesforce_id.to_string()),
        action: Action::Drifted,
        changes: drifts
            .iter()
            .map(|d| FieldChange { field: d.field.clone(), before: Some(d.sent.clone()), after: d.now.clone() })
            .collect(),
        error_code: Some(if gone { "DELETED" } else { "DRIFT" }.to_owned()),
        message: Some(message),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field(name: &str, ty: &str, scale: Option<u64>) -> FieldDescribe {
        let mut f: FieldDescribe = serde_json::from_value(json!({"name": name, "type": ty})).unwrap_or_else(|e| {
            panic!("describe of {name}: {e}");
        });
        if let Some(s) = scale {
            f.extra.insert("scale".into(), json!(s));
        }
        f
    }

    fn w(id: &str, fields: Vec<(&str, Value)>) -> Written<'static> {
        Written {
            key: format!("k-{id}").into(),
            salesforce_id: id.to_owned().into(),
            fields: fields.into_iter().map(|(f, v)| (f.into(), v)).collect(),
        }
    }

    #[test]
    fn numbers_compare_at_the_fields_scale() {
        let two = field("Score__c", "double", Some(2));
        assert!(same(&json!(12.345), &json!(12.35), Some(&two)), "Salesforce rounds to the scale on save");
        assert!(same(&json!(12.3), &json!(12.30), Some(&two)));
        assert!(same(&json!("7"), &json!(7), Some(&two)), "a number sent as text");
        assert!(!same(&json!(12.34), &json!(12.35), Some(&two)));
        assert!(!same(&json!(12.0), &json!(13), Some(&two)));
        let int = field("Users__c", "int", None);
        assert!(same(&json!(4.0), &json!(4), Some(&int)));
        assert!(!same(&json!(4), &json!(5), Some(&int)));
        assert!(same(&Value::Null, &Value::Null, Some(&int)));
        assert!(!same(&json!(0), &Value::Null, Some(&int)), "zero is not blank");
        // Without a describe: numbers by value, no rounding assumed.
        assert!(same(&json!(3), &json!(3.0), None));
        assert!(!same(&json!(3.1), &json!(3.0), None));
    }

    #[test]
    fn dates_and_datetimes_compare_as_salesforce_keeps_them() {
        let d = field("Renewal__c", "date", None);
        assert!(same(&json!("2026-12-04"), &json!("2026-12-04"), Some(&d)));
        assert!(same(&json!("2026-12-04T23:10:00Z"), &json!("2026-12-04"), Some(&d)));
        assert!(!same(&json!("2026-12-04"), &json!("2026-12-05"), Some(&d)));
        let t = field("Pendo_Updated__c", "datetime", None);
        assert!(same(&json!("2026-12-04T22:11:22.123Z"), &json!("2026-12-04T22:11:22.000+0000"), Some(&t)));
        assert!(same(&json!("2026-12-04T23:11:22+01:00"), &json!("2026-12-04T22:11:22.000+0000"), Some(&t)));
        assert!(same(&json!("2026-12-04T22:11:22"), &json!("2026-12-04T22:11:22.000+0000"), Some(&t)));
        assert!(!same(&json!("2026-12-04T22:11:22Z"), &json!("2026-12-04T22:11:23.000+0000"), Some(&t)));
        assert!(!same(&json!("2026-12-04T22:11:22Z"), &Value::Null, Some(&t)));
        // Guessed without a describe.
        assert!(same(&json!("2026-12-04T22:11:22.5Z"), &json!("2026-12-04T22:11:22.000+0000"), None));
        assert!(!same(&json!("2026-12-04"), &json!("2026-12-03"), None));
    }

    #[test]
    fn blanks_booleans_and_lookups() {
        let s = field("Tier__c", "string", None);
        assert!(same(&json!(""), &Value::Null, Some(&s)), "Salesforce keeps an empty string as null");
        assert!(same(&Value::Null, &json!(""), None));
        assert!(!same(&json!("Gold"), &Value::Null, Some(&s)));
        assert!(!same(&json!("Gold"), &json!("gold"), Some(&s)), "text is compared exactly");
        let b = field("Active__c", "boolean", None);
        assert!(same(&Value::Null, &json!(false), Some(&b)));
        assert!(same(&json!("true"), &json!(true), Some(&b)));
        assert!(!same(&json!(true), &json!(false), Some(&b)));
        assert!(!same(&json!(true), &json!(false), None));
        let r = field("CSM__c", "reference", None);
        assert!(same(&json!("0058d0000000001"), &json!("0058d0000000001AAA"), Some(&r)));
        assert!(!same(&json!("0058d0000000001"), &json!("0058d0000000002AAA"), Some(&r)));
        let m = field("Products__c", "multipicklist", None);
        assert!(same(&json!("b;a"), &json!("a;b"), Some(&m)));
        assert!(!same(&json!("a;b"), &json!("a"), Some(&m)));
    }

    #[test]
    fn a_changed_field_and_a_deleted_record_are_drift_with_who_and_when() {
        let written = w("001000000000001AAA", vec![("Score__c", json!(80.0)), ("Tier__c", json!("Gold"))]);
        let row = json!({"attributes": {"type": "Account"}, "Id": "001000000000001AAA", "score__c": 42.0,
            "Tier__c": "Gold", "LastModifiedById": "005000000000009AAA", "LastModifiedDate": "2026-12-04T22:15:00.000+0000"});
        let drifts = compare("Account", &written, Some(&row), None);
        assert_eq!(drifts.len(), 1, "{drifts:?}");
        let d = &drifts[0];
        assert_eq!((d.field.as_str(), &d.sent, &d.now), ("Score__c", &json!(80.0), &json!(42.0)));
        assert_eq!(d.last_modified_by.as_deref(), Some("005000000000009AAA"));
        assert_eq!(d.last_modified_at.as_deref(), Some("2026-12-04T22:15:00.000+0000"));
        let row = outcome("Account", &written, &drifts, false).expect("a history row");
        assert_eq!((row.action, row.error_code.as_deref()), (Action::Drifted, Some("DRIFT")));
        assert_eq!(row.changes[0].before, Some(json!(80.0)));

        let gone = compare("Account", &written, None, None);
        assert_eq!(gone.len(), 1);
        assert_eq!((gone[0].field.as_str(), &gone[0].now), ("Id", &Value::Null));
        let row = outcome("Account", &written, &gone, true).expect("a history row");
        assert_eq!(row.error_code.as_deref(), Some("DELETED"));

        let untouched = json!({"Id": "001000000000001AAA", "Score__c": 80, "Tier__c": "Gold"});
        assert!(compare("Account", &written, Some(&untouched), None).is_empty());
        assert!(outcome("Account", &written, &[], false).is_none());
    }

    #[test]
    fn the_sample_is_deterministic_spread_and_bounded() {
        let written: Vec<Written> = (0..1000).map(|i| w(&format!("id{i:04}"), vec![])).collect();
        let a = sample(&written, 200, "run-1");
        assert_eq!(a.len(), 200);
        assert_eq!(a, sample(&written, 200, "run-1"), "the same run picks the same records");
        assert!(a.windows(2).all(|p| p[0] < p[1]), "in input order, no repeats");
        assert!(a.iter().any(|&i| i >= 500) && a.iter().any(|&i| i < 500), "spread over the run, not its head");
        assert_ne!(a, sample(&written, 200, "run-2"), "another run checks other records");
        assert_eq!(sample(&written, 5000, "x").len(), 1000, "all when the sample covers them");
        assert!(sample(&written, 0, "x").is_empty());
        assert!(sample(&[], 200, "x").is_empty());
    }

    #[test]
    fn the_budget_is_a_query_per_200_and_a_first_page_when_a_scan_may_be_cheaper() {
        assert_eq!(max_calls(0), 0);
        assert_eq!(max_calls(1), 1);
        assert_eq!(max_calls(200), 1);
        assert_eq!(max_calls(400), 2);
        assert_eq!(max_calls(401), 4, "three queries, or a scan whose first page is read first");
        assert_eq!(max_calls(9014), 47);
    }

    #[test]
    fn reports_merge_counting_everything_and_keeping_the_first_drifts() {
        let d = |i: usize| Drift {
            object: "Task".into(),
            salesforce_id: format!("00T{i}"),
            field: "Status".into(),
            sent: json!("Not Started"),
            now: json!("Completed"),
            last_modified_by: Some("005a".into()),
            last_modified_at: None,
        };
        let mut a = VerifyReport { checked: 40, sampled_from: 40, ..Default::default() };
        for i in 0..40 {
            a.add(d(i));
        }
        let mut b = VerifyReport { checked: 30, sampled_from: 90, ..Default::default() };
        for i in 0..30 {
            b.add(d(100 + i));
        }
        b.note = Some("cut short".into());
        a.merge(b);
        assert_eq!((a.checked, a.sampled_from, a.values_changed), (70, 130, 70));
        assert_eq!(a.drift.len(), KEPT);
        assert_eq!(a.changed_by["005a"], 70);
        assert_eq!(a.note.as_deref(), Some("cut short"));
    }
}
