//! Delivery: sends a plan's changes to Salesforce and sorts every record into written, failed
//! (with Salesforce's code and message) or deferred.
//!
//! Two levels of retry. Request-level retries (backoff with jitter, token refresh) live in the
//! Salesforce client. Record-level retries live here: when a Collections call or a Bulk job
//! comes back with some records refused for a transient reason (`UNABLE_TO_LOCK_ROW`, a
//! rolled-back all-or-none batch, rows a failed job never processed), only those records are
//! sent again, after a jittered pause. A request refused because the org's daily allocation is
//! spent defers the records it carried and everything after them.
//!
//! Before any of that, [`hold_back`] takes the fields preflight quarantined out of each change,
//! so a field the org does not have (or will not take) is never sent and the rest of the record
//! still is.

use std::collections::BTreeMap;
use std::time::Duration;

use salesforce::{BulkOperation, IngestOptions, RowStatus};
use salesforce::{RetryClass, SalesforceId};
use serde_json::{Map, Value};

use crate::change::Change;
use crate::plan::{COLLECTION_SIZE, WritePath};
use crate::preflight::Quarantine;

/// A record with nothing left to send once its quarantined fields were taken out.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldBack {
    pub change: Change,
    /// Why its fields are held back (the preflight problems, with file:line).
    pub reason: String,
}

impl HeldBack {
    /// The record's history row: skipped, with the preflight problem as the reason.
    pub fn outcome(&self, object: &str) -> crate::store::RecordOutcome {
        crate::store::RecordOutcome {
            object: object.into(),
            key: self.change.key.clone(),
            salesforce_id: Some(self.change.salesforce_id.clone()),
            action: crate::store::Action::Skipped,
            changes: vec![],
            error_code: Some("QUARANTINED".into()),
            message: Some(self.reason.clone()),
        }
    }
}

/// Takes the fields `quarantine` holds for `object` out of every change (and their
/// fingerprints, so the next run sends them again once the problem is fixed). A change left
/// with nothing but `riders` (fields sent only alongside a real change, such as an updated-at
/// stamp) is not sent at all and comes back as held back.
pub fn hold_back(
    quarantine: &Quarantine,
    object: &str,
    riders: &[&str],
    changes: Vec<Change>,
) -> (Vec<Change>, Vec<HeldBack>) {
    if quarantine.is_empty() {
        return (changes, Vec::new());
    }
    let mut send = Vec::with_capacity(changes.len());
    let mut held = Vec::new();
    for mut change in changes {
        let original = change.clone();
        change.retain_fields(|f| !quarantine.holds(object, f));
        if change.fields.iter().any(|(f, _)| !riders.contains(&&**f)) {
            send.push(change);
            continue;
        }
        let reasons: Vec<String> = original.fields.iter().filter_map(|(f, _)| quarantine.reason(object, f)).collect();
        held.push(HeldBack { change: original, reason: format!("quarantined by preflight: {}", reasons.join("; ")) });
    }
    (send, held)
}

/// A record Salesforce refused for good (or that kept failing).
#[derive(Debug, Clone, PartialEq)]
pub struct Failed {
    pub change: Change,
    pub code: String,
    pub message: String,
    pub fields: Vec<String>,
}

/// Where every record of a delivery ended up, and what it cost.
#[derive(Debug, Default)]
pub struct Delivery {
    pub written: Vec<Change>,
    pub failed: Vec<Failed>,
    pub deferred: Vec<Change>,
    /// Requests sent, by kind (`collections`, `single`, `bulk_job`, `retry`).
    pub requests: BTreeMap<&'static str, u64>,
}

/// Record-level retries.
#[derive(Debug, Clone)]
pub struct RecordRetry {
    /// Rounds after the first send.
    pub rounds: u32,
    /// Pause before the first round; doubled each round, with up to 50% jitter.
    pub pause: Duration,
}

impl Default for RecordRetry {
    fn default() -> Self {
        RecordRetry { rounds: 3, pause: Duration::from_millis(500) }
    }
}

/// Sends `changes` to `object` records by `path`. `progress` is told how many records have
/// been settled so far.
pub async fn deliver(
    client: &salesforce::Client,
    object: &str,
    path: WritePath,
    changes: Vec<Change>,
    retry: &RecordRetry,
    progress: &(dyn Fn(usize) + Sync),
) -> Delivery {
    let mut out = Delivery::default();
    let mut pending = match path {
        WritePath::Bulk => bulk(client, object, changes, &mut out, progress).await,
        WritePath::Single | WritePath::Collections => collections(client, object, changes, &mut out, progress).await,
    };
    progress(out.written.len() + out.failed.len() + out.deferred.len());
    for round in 0..retry.rounds {
        if pending.is_empty() {
            break;
        }
        let factor = 2u32.saturating_pow(round);
        let pause = retry.pause.saturating_mul(factor);
        let jitter = f64::from(rand::random_range(0..=500u32)) / 1000.0;
        tokio::time::sleep(pause.mul_f64(1.0 + jitter)).await;
        let before = out.requests.values().sum::<u64>();
        let again = pending.into_iter().map(|(c, _)| c).collect();
        pending = collections(client, object, again, &mut out, progress).await;
        let sent = out.requests.values().sum::<u64>() - before;
        // Count retries apart so a run's report shows what contention cost.
        if let Some(n) = out.requests.get_mut("collections") {
            *n -= sent.min(*n);
        }
        *out.requests.entry("retry").or_default() += sent;
    }
    // Whatever still fails transiently is kept as a failure, so replay can send it later.
    out.failed.extend(pending.into_iter().map(|(change, f)| Failed { change, ..f }));
    progress(out.written.len() + out.failed.len() + out.deferred.len());
    out
}

/// Records refused for a transient reason, with that reason.
type Pending = Vec<(Change, Failed)>;

fn parse_id(change: &Change) -> Result<SalesforceId, Box<Failed>> {
    SalesforceId::parse(&change.salesforce_id).map_err(|e| {
        Box::new(Failed {
            change: change.clone(),
            code: "INVALID_ID".into(),
            message: format!("{:?} is not a Salesforce Id: {e}", change.salesforce_id),
            fields: vec!["Id".into()],
        })
    })
}

/// A request-level failure: which records it takes down, and how.
fn request_failed(err: &salesforce::Error, batch: Vec<Change>, out: &mut Delivery) -> bool {
    if err.retry_class() == RetryClass::NotNow {
        out.deferred.extend(batch);
        return true;
    }
    let code = err.error_code().map_or_else(|| "REQUEST_FAILED".to_owned(), |c| c.as_str().to_owned());
    let message = err.to_string();
    out.failed.extend(batch.into_iter().map(|change| Failed {
        fields: change.names(),
        change,
        code: code.clone(),
        message: message.clone(),
    }));
    false
}

async fn collections(
    client: &salesforce::Client,
    object: &str,
    changes: Vec<Change>,
    out: &mut Delivery,
    progress: &(dyn Fn(usize) + Sync),
) -> Pending {
    let mut pending = Pending::new();
    let mut rest = changes.into_iter().peekable();
    while rest.peek().is_some() {
        let batch: Vec<Change> = rest.by_ref().take(COLLECTION_SIZE).collect();
        let mut ok = Vec::with_capacity(batch.len());
        for change in batch {
            match parse_id(&change) {
                Ok(id) => ok.push((change, id)),
                Err(f) => out.failed.push(*f),
            }
        }
        if ok.is_empty() {
            continue;
        }
        let result = if ok.len() == 1 {
            *out.requests.entry("single").or_default() += 1;
            let (change, id) = &ok[0];
            client.update(object, id, &change.object()).await.map(|()| None)
        } else {
            *out.requests.entry("collections").or_default() += 1;
            let records: Vec<(SalesforceId, Map<String, Value>)> =
                ok.iter().map(|(c, id)| (id.clone(), c.object())).collect();
            client.update_many(object, &records, false).await.map(Some)
        };
        crate::testhook::crash_point("deliver");
        let batch: Vec<Change> = ok.into_iter().map(|(c, _)| c).collect();
        match result {
            Ok(None) => out.written.extend(batch),
            Ok(Some(results)) if results.len() == batch.len() => {
                for (change, r) in batch.into_iter().zip(results) {
                    match r.first_error() {
                        None if r.success => out.written.push(change),
                        error => sort_refusal(change, error, &mut pending, out),
                    }
                }
            }
            Ok(Some(results)) => {
                let message = format!("Salesforce returned {} results for {} records", results.len(), batch.len());
                out.failed.extend(batch.into_iter().map(|change| Failed {
                    change,
                    code: "RESULT_MISMATCH".into(),
                    message: message.clone(),
                    fields: vec![],
                }));
            }
            Err(salesforce::Error::Api(api)) if api.retry_class() != RetryClass::NotNow => {
                // A single PATCH refused: the error is the record's, so it is sorted like a
                // Collections record error (lock contention retried, the rest kept).
                if let Some(change) = batch.into_iter().next() {
                    let e = salesforce::RecordError {
                        status_code: api.error_code.clone(),
                        message: api.message.clone(),
                        fields: api.fields.clone(),
                        duplicate_result: None,
                    };
                    sort_refusal(change, Some(&e), &mut pending, out);
                }
            }
            Err(e) => {
                if request_failed(&e, batch, out) {
                    out.deferred.extend(rest);
                    break;
                }
            }
        }
        progress(out.written.len() + out.failed.len() + out.deferred.len());
    }
    pending
}

fn sort_refusal(change: Change, error: Option<&salesforce::RecordError>, pending: &mut Pending, out: &mut Delivery) {
    let (code, message, fields, retry) = match error {
        Some(e) => (e.status_code.as_str().to_owned(), e.message.clone(), e.fields.clone(), e.retry_class()),
        None => ("UNKNOWN".to_owned(), "refused without an error".to_owned(), vec![], RetryClass::Permanent),
    };
    let failed = Failed { change: change.clone(), code, message, fields };
    if retry.is_retryable() { pending.push((change, failed)) } else { out.failed.push(failed) }
}

/// What a Bulk job said of one row (the error of a refused row is kept apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// No result yet, or the job never processed the row.
    NoResult,
    Written,
    Refused,
}

fn bulk_row(c: &Change) -> Map<String, Value> {
    let mut row = c.object();
    row.insert("Id".into(), Value::String(c.salesforce_id.clone()));
    row
}

async fn bulk(
    client: &salesforce::Client,
    object: &str,
    changes: Vec<Change>,
    out: &mut Delivery,
    progress: &(dyn Fn(usize) + Sync),
) -> Pending {
    let mut pending = Pending::new();
    let mut columns: Vec<String> = vec!["Id".into()];
    let mut seen = std::collections::BTreeSet::new();
    for c in &changes {
        for (f, _) in &c.fields {
            if seen.insert(&**f) {
                columns.push(f.to_string());
            }
        }
    }
    let options = IngestOptions { columns: Some(columns), ..IngestOptions::new(object, BulkOperation::Update) };
    // A fn item, not a closure: a closure here makes the future's Send check fail on
    // higher-ranked lifetimes, and the daemon spawns runs on other threads.
    let rows = changes.iter().map(bulk_row as fn(&Change) -> Map<String, Value>);
    *out.requests.entry("bulk_job").or_default() += 1;
    // Only each row's status is kept, a byte a row: the echoed input columns of 100,000 result
    // rows, or a `RowStatus` a row (sized for a refusal with its duplicate result), would cost
    // more than the whole run needs otherwise. Refusals keep their errors apart.
    let mut settled_rows = vec![Settled::NoResult; changes.len()];
    let mut refusals: BTreeMap<usize, salesforce::RecordError> = BTreeMap::new();
    // While the job runs, the bar follows Salesforce's count of processed rows.
    let settled = out.written.len() + out.failed.len() + out.deferred.len();
    let on_progress = |processed: u64| progress(settled + usize::try_from(processed).unwrap_or(usize::MAX));
    let result = client
        .bulk_ingest_progress(
            &options,
            rows,
            |o| {
                crate::testhook::crash_point("bulk");
                let Some(i) = o.index.and_then(|i| usize::try_from(i).ok()) else { return };
                let Some(slot) = settled_rows.get_mut(i) else { return };
                *slot = match o.status {
                    RowStatus::Success { .. } => Settled::Written,
                    RowStatus::Unprocessed => Settled::NoResult,
                    RowStatus::Failed(e) => {
                        refusals.insert(i, e);
                        Settled::Refused
                    }
                };
            },
            &on_progress,
        )
        .await;
    crate::testhook::crash_point("deliver");
    if let Err(e) = result {
        request_failed(&e, changes, out);
        return pending;
    }
    for (i, (change, row)) in changes.into_iter().zip(settled_rows).enumerate() {
        match (row, refusals.remove(&i)) {
            (Settled::Written, _) => out.written.push(change),
            (Settled::Refused, Some(e)) => sort_refusal(change, Some(&e), &mut pending, out),
            // Never processed, or no result came back for the row: safe to send again.
            (Settled::NoResult | Settled::Refused, _) => {
                let failed = Failed {
                    change: change.clone(),
                    code: "UNPROCESSED".into(),
                    message: "the Bulk job ended before processing this row".into(),
                    fields: vec![],
                };
                pending.push((change, failed));
            }
        }
    }
    pending
}
