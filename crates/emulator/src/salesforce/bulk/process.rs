//! The background worker behind an ingest job. Once a job is closed it runs on the tokio
//! runtime: `UploadComplete → InProgress`, then the CSV in internal batches of 10,000 rows,
//! each taking the org's lock once and applying every row through the same [`Db`] DML as the
//! REST API (validation, uniqueness, system fields), then `JobComplete` — or `Failed` /
//! `Aborted`, leaving the remaining rows unprocessed.
//!
//! Lock order is `db → bulk` (as in request handling): a chunk is applied under `db`, which is
//! then released before its results are appended under `bulk`.

use std::time::{Duration, Instant};

use csv::ByteRecord;
use serde_json::{Map, Value, json};

use super::csvio::{self, RowWriter};
use super::ingest::Operation;
use super::{Delimiter, INTERNAL_BATCH_RECORDS, JobState, LineEnding};
use crate::salesforce::schema::{FieldType, ObjectDef};
use crate::salesforce::state::SfState;
use crate::salesforce::store::{Db, DmlError, UpsertError, UpsertOutcome, WriteCtx};

/// Spawns the worker for a job that was just closed.
pub fn start(st: SfState, job_id: String) {
    tokio::spawn(async move { run(st, job_id).await });
}

/// What one input column means.
#[derive(Debug, Clone)]
enum Column {
    /// The record ID (update, delete; or the upsert key when `externalIdFieldName` is `Id`).
    Id,
    /// A field, by canonical name, with its type (booleans accept `1`/`0`).
    Field { name: String, ty: FieldType },
    /// `Account.Pendo_Account_Id__c`: a lookup set through the parent's external ID.
    Relationship { lookup: String, relationship: String, ext_field: String },
}

struct Snapshot {
    object: String,
    operation: Operation,
    external_id: Option<String>,
    data: bytes::Bytes,
    delimiter: Delimiter,
    line_ending: LineEnding,
    user_id: String,
}

/// The job's state, or `None` once it was deleted.
fn state_of(st: &SfState, id: &str) -> Option<JobState> {
    st.bulk.lock().ingest.get(id).map(|j| j.common.state)
}

fn finish(st: &SfState, id: &str, state: JobState, message: Option<String>, started: Instant) {
    let now = st.clock.now();
    let mut jobs = st.bulk.lock();
    if let Some(job) = jobs.ingest.get_mut(id) {
        // An abort that raced with the last chunk wins.
        if job.common.state != JobState::Aborted {
            job.common.state = state;
            job.common.error_message = message;
        }
        job.common.modstamp = now;
        job.total_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    }
}

async fn run(st: SfState, id: String) {
    let started = Instant::now();
    let snapshot = {
        let mut jobs = st.bulk.lock();
        let Some(job) = jobs.ingest.get_mut(&id) else { return };
        if job.common.state != JobState::UploadComplete {
            return;
        }
        job.common.state = JobState::InProgress;
        job.common.modstamp = st.clock.now();
        Snapshot {
            object: job.object.clone(),
            operation: job.operation,
            external_id: job.external_id.clone(),
            data: job.data.clone().unwrap_or_default(),
            delimiter: job.common.delimiter,
            line_ending: job.common.line_ending,
            user_id: job.common.created_by.clone(),
        }
    };
    let (fail_job, delay_ms) = {
        let mut faults = st.faults.lock();
        (faults.bulk_job_fails(), faults.config.bulk_processing_delay_ms)
    };

    let mut reader = csvio::reader(&snapshot.data, snapshot.delimiter, snapshot.line_ending);
    let mut rows = reader.byte_records();
    let header: Vec<String> = match rows.next() {
        Some(Ok(h)) => h.iter().map(|c| String::from_utf8_lossy(c).trim().to_string()).collect(),
        Some(Err(e)) => {
            finish(
                &st,
                &id,
                JobState::Failed,
                Some(format!("InvalidBatch : Failed to parse CSV header: {e}")),
                started,
            );
            return;
        }
        None => Vec::new(),
    };
    if let Some(job) = st.bulk.lock().ingest.get_mut(&id) {
        job.header = header.clone();
    }
    let columns = {
        let db = st.db.lock();
        plan_columns(&db, &snapshot, &header)
    };
    let columns = match columns {
        Ok(c) => c,
        Err(message) => {
            finish(&st, &id, JobState::Failed, Some(message), started);
            return;
        }
    };

    let total_rows_hint = snapshot.data.len();
    let mut chunk_index = 0usize;
    loop {
        let mut chunk: Vec<ByteRecord> = Vec::with_capacity(INTERNAL_BATCH_RECORDS.min(total_rows_hint / 8 + 1));
        let mut parse_error = None;
        for row in rows.by_ref() {
            match row {
                Ok(r) => chunk.push(r),
                Err(e) => {
                    parse_error = Some(e);
                    break;
                }
            }
            if chunk.len() == INTERNAL_BATCH_RECORDS {
                break;
            }
        }
        if chunk.is_empty() && parse_error.is_none() {
            break;
        }
        if delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        match state_of(&st, &id) {
            Some(JobState::InProgress) => {}
            _ => return,
        }
        // A whole-job failure strikes after the first batch, so some rows are done and the
        // rest are left unprocessed, as an internal failure mid-job leaves them.
        if fail_job && chunk_index >= 1 {
            finish(
                &st,
                &id,
                JobState::Failed,
                Some("InternalServerError : An unexpected error occurred while processing the job.".into()),
                started,
            );
            return;
        }
        {
            let now = st.clock.now();
            let mut acc = st.accounting.lock();
            if acc.bulk_batches.exhausted(now) {
                drop(acc);
                finish(
                    &st,
                    &id,
                    JobState::Failed,
                    Some("ExceededQuota : ApiBatchItems Limit exceeded.".into()),
                    started,
                );
                return;
            }
            acc.bulk_batches.add(1, now);
            acc.bulk_records.add(chunk.len() as u64, now);
        }
        let chunk_started = Instant::now();
        let out = apply_chunk(&st, &snapshot, &columns, header.len(), &chunk);
        let now = st.clock.now();
        {
            let mut jobs = st.bulk.lock();
            let Some(job) = jobs.ingest.get_mut(&id) else { return };
            job.successful.extend_from_slice(&out.successful);
            job.failed_rows.extend_from_slice(&out.failed);
            job.processed += chunk.len() as u64;
            job.failed += out.failed_count;
            job.rows_done += chunk.len();
            job.api_active_ms += u64::try_from(chunk_started.elapsed().as_millis()).unwrap_or(u64::MAX);
            job.common.modstamp = now;
        }
        chunk_index += 1;
        if let Some(e) = parse_error {
            finish(&st, &id, JobState::Failed, Some(format!("InvalidBatch : Failed to parse CSV: {e}")), started);
            return;
        }
        // Let request handlers in between chunks.
        tokio::task::yield_now().await;
    }
    finish(&st, &id, JobState::JobComplete, None, started);
}

/// Checks the header against the schema. Unknown columns fail the whole job, as Salesforce
/// fails a batch whose header names a field the object does not have.
fn plan_columns(db: &Db, job: &Snapshot, header: &[String]) -> Result<Vec<Column>, String> {
    let Some(obj) = db.schema.object(&job.object) else {
        return Err(format!("InvalidJob : Unable to find object: {}", job.object));
    };
    let mut columns = Vec::with_capacity(header.len());
    for name in header {
        columns
            .push(plan_column(db, obj, name).ok_or_else(|| format!("InvalidBatch : Field name not found : {name}"))?);
    }
    let has = |pred: &dyn Fn(&Column) -> bool| columns.iter().any(pred);
    match job.operation {
        Operation::Update | Operation::Delete | Operation::HardDelete if !has(&|c| matches!(c, Column::Id)) => {
            return Err("InvalidBatch : Field name not found : Id".into());
        }
        Operation::Upsert => {
            let ext = job.external_id.clone().unwrap_or_default();
            let present = has(&|c| match c {
                Column::Id => ext == "Id",
                Column::Field { name, .. } => *name == ext,
                Column::Relationship { .. } => false,
            });
            if !present {
                return Err(format!("InvalidBatch : Field name not found : {ext}"));
            }
        }
        _ => {}
    }
    Ok(columns)
}

fn plan_column(db: &Db, obj: &ObjectDef, name: &str) -> Option<Column> {
    if let Some((rel, ext)) = name.split_once('.') {
        let lookup = obj.relationship(rel)?;
        let target = db.schema.object(lookup.reference_to.first()?)?;
        let ext_field = target.field(ext).filter(|f| f.external_id || f.field_type == FieldType::Id)?;
        return Some(Column::Relationship {
            lookup: lookup.name.clone(),
            relationship: lookup.relationship_name.clone().unwrap_or_else(|| rel.to_string()),
            ext_field: ext_field.name.clone(),
        });
    }
    let f = obj.field(name)?;
    if f.field_type == FieldType::Id {
        return Some(Column::Id);
    }
    Some(Column::Field { name: f.name.clone(), ty: f.field_type })
}

struct ChunkOutput {
    successful: Vec<u8>,
    failed: Vec<u8>,
    failed_count: u64,
}

/// One row's result: the record ID (if any) and either `created` or the error text.
type RowResult = (String, Result<bool, String>);

fn apply_chunk(st: &SfState, job: &Snapshot, columns: &[Column], width: usize, chunk: &[ByteRecord]) -> ChunkOutput {
    let mut results: Vec<RowResult> = Vec::with_capacity(chunk.len());
    {
        let mut db = st.db.lock();
        let ctx = WriteCtx { user_id: job.user_id.clone(), now: st.clock.now() };
        for row in chunk {
            let lock = st.faults.lock().bulk_lock_row();
            results.push(apply_row(&mut db, job, columns, row, &ctx, lock));
        }
    }
    let mut ok = RowWriter::new(job.delimiter, job.line_ending);
    let mut bad = RowWriter::new(job.delimiter, job.line_ending);
    let mut failed_count = 0;
    for (row, (id, result)) in chunk.iter().zip(results) {
        let cells = (0..width).map(|i| row.get(i).unwrap_or(b""));
        match result {
            Ok(created) => {
                let created: &[u8] = if created { b"true" } else { b"false" };
                ok.row([id.as_bytes(), created].into_iter().chain(cells));
            }
            Err(message) => {
                failed_count += 1;
                bad.row([id.as_bytes(), message.as_bytes()].into_iter().chain(cells));
            }
        }
    }
    ChunkOutput { successful: ok.finish(), failed: bad.finish(), failed_count }
}

fn errors_text(errors: &[DmlError]) -> String {
    errors.iter().map(DmlError::bulk_text).collect::<Vec<_>>().join(" ")
}

fn lock_text(id: &str) -> String {
    DmlError::new(
        "UNABLE_TO_LOCK_ROW",
        format!("unable to obtain exclusive access to this record or 1 records: {id}"),
        vec![],
    )
    .bulk_text()
}

/// Applies one CSV row. Empty cells leave a field as it is; `#N/A` sets it to null.
fn apply_row(
    db: &mut Db,
    job: &Snapshot,
    columns: &[Column],
    row: &ByteRecord,
    ctx: &WriteCtx,
    lock: bool,
) -> RowResult {
    let mut body = Map::new();
    let mut id = String::new();
    let mut key: Option<String> = None;
    let ext = job.external_id.as_deref().unwrap_or("");
    for (i, col) in columns.iter().enumerate() {
        let raw = row.get(i).unwrap_or(b"");
        let Ok(cell) = std::str::from_utf8(raw) else {
            return (
                String::new(),
                Err(DmlError::new("INVALID_FIELD", "Invalid UTF-8 in CSV value", vec![]).bulk_text()),
            );
        };
        if cell.is_empty() {
            continue;
        }
        let null = cell == "#N/A";
        match col {
            Column::Id => {
                if ext == "Id" {
                    key = Some(cell.to_string());
                }
                id = cell.to_string();
            }
            Column::Field { name, ty } => {
                if name == ext {
                    key = Some(cell.to_string());
                    continue;
                }
                let v = if null {
                    Value::Null
                } else if *ty == FieldType::Boolean {
                    match cell {
                        "1" => json!(true),
                        "0" => json!(false),
                        other => json!(other),
                    }
                } else {
                    json!(cell)
                };
                body.insert(name.clone(), v);
            }
            Column::Relationship { lookup, relationship, ext_field } => {
                if null {
                    body.insert(lookup.clone(), Value::Null);
                } else {
                    body.insert(relationship.clone(), json!({ ext_field.clone(): cell }));
                }
            }
        }
    }
    let norm = |id: &str| crate::salesforce::ids::normalize(id).unwrap_or_else(|| id.to_string());
    match job.operation {
        Operation::Insert => {
            if lock {
                return (String::new(), Err(lock_text("")));
            }
            if !id.is_empty() {
                return (
                    String::new(),
                    Err(DmlError::new(
                        "INVALID_FIELD_FOR_INSERT_UPDATE",
                        "cannot specify Id in an insert call",
                        vec!["Id".into()],
                    )
                    .bulk_text()),
                );
            }
            match db.create(&job.object, &body, ctx) {
                Ok(new_id) => (new_id, Ok(true)),
                Err(e) => (String::new(), Err(errors_text(&e))),
            }
        }
        Operation::Update => {
            if id.is_empty() {
                return (
                    String::new(),
                    Err(DmlError::new("MISSING_ARGUMENT", "Id not specified in an update call", vec![]).bulk_text()),
                );
            }
            if lock {
                return (id.clone(), Err(lock_text(&id)));
            }
            match db.update(&job.object, &id, &body, ctx) {
                Ok(()) => (norm(&id), Ok(false)),
                Err(e) => (id, Err(errors_text(&e))),
            }
        }
        Operation::Upsert => {
            let value = key.unwrap_or_default();
            if value.is_empty() && ext != "Id" {
                return (
                    String::new(),
                    Err(DmlError::new("MISSING_ARGUMENT", format!("{ext} not specified"), vec![]).bulk_text()),
                );
            }
            if lock {
                return (String::new(), Err(lock_text(&value)));
            }
            match db.upsert(&job.object, ext, &value, &body, ctx) {
                Ok(UpsertOutcome::Created(new_id)) => (new_id, Ok(true)),
                Ok(UpsertOutcome::Updated(existing)) => (existing, Ok(false)),
                Err(UpsertError::Dml(e)) => (String::new(), Err(errors_text(&e))),
                Err(UpsertError::Multiple(ids)) => (
                    String::new(),
                    Err(DmlError::new(
                        "DUPLICATE_EXTERNAL_ID",
                        format!("{ext}: more than one record found for external id field: {}", ids.join(", ")),
                        vec![ext.to_string()],
                    )
                    .bulk_text()),
                ),
            }
        }
        Operation::Delete | Operation::HardDelete => {
            if id.is_empty() {
                return (
                    String::new(),
                    Err(DmlError::new("MISSING_ARGUMENT", "Id not specified in a delete call", vec![]).bulk_text()),
                );
            }
            if lock {
                return (id.clone(), Err(lock_text(&id)));
            }
            let result = if job.operation == Operation::HardDelete {
                db.hard_delete(&job.object, &id, ctx)
            } else {
                db.delete(&job.object, &id, ctx)
            };
            match result {
                Ok(()) => (norm(&id), Ok(false)),
                Err(e) => (id, Err(e.bulk_text())),
            }
        }
    }
}
