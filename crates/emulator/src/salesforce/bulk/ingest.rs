//! Ingest jobs: `POST /jobs/ingest` creates one, `PUT /jobs/ingest/{id}/batches` uploads its
//! one CSV, `PATCH` closes or aborts it, `GET` reads it (or lists them all), `DELETE` removes
//! it, and `successfulResults`, `failedResults` and `unprocessedrecords` answer CSV.
//!
//! Only one upload per job is allowed; a second one is accepted (201) but makes the close fail
//! with Salesforce's own (misspelt) "Found multipe contents for job" message.

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::csvio::{self, RowWriter};
use super::{Delimiter, JobCommon, JobState, LineEnding, error, invalid_value, job_not_found, stamp};
use crate::salesforce::response::{Resp, RespBody};
use crate::salesforce::rest::{CallCtx, DataRequest};
use crate::salesforce::schema::FieldType;
use crate::salesforce::state::SfState;
use crate::salesforce::store::Db;

/// `operation` of an ingest job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Insert,
    Update,
    Upsert,
    Delete,
    HardDelete,
}

impl Operation {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "insert" => Operation::Insert,
            "update" => Operation::Update,
            "upsert" => Operation::Upsert,
            "delete" => Operation::Delete,
            "hardDelete" => Operation::HardDelete,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Upsert => "upsert",
            Operation::Delete => "delete",
            Operation::HardDelete => "hardDelete",
        }
    }
}

/// One ingest job and what processing it has produced so far.
#[derive(Debug, Clone)]
pub struct IngestJob {
    pub common: JobCommon,
    /// Canonical sObject name.
    pub object: String,
    pub operation: Operation,
    /// Canonical external ID field name (upsert only).
    pub external_id: Option<String>,
    pub assignment_rule_id: Option<String>,
    /// The first upload; later ones are only counted.
    pub data: Option<Bytes>,
    pub uploads: u32,
    pub processed: u64,
    pub failed: u64,
    pub retries: u32,
    pub total_ms: u64,
    pub api_active_ms: u64,
    pub apex_ms: u64,
    /// The input header as uploaded, once processing has read it.
    pub header: Vec<String>,
    /// Result rows (no header), already in the job's CSV format.
    pub successful: Vec<u8>,
    pub failed_rows: Vec<u8>,
    /// Data rows consumed so far; the rest are "unprocessed".
    pub rows_done: usize,
}

impl IngestJob {
    /// Job info. `full` adds the counters and timings that `GET` shows.
    pub fn json(&self, version: &str) -> Value {
        let c = &self.common;
        let mut m = Map::new();
        m.insert("id".into(), json!(c.id));
        m.insert("operation".into(), json!(self.operation.as_str()));
        m.insert("object".into(), json!(self.object));
        m.insert("createdById".into(), json!(c.created_by));
        m.insert("createdDate".into(), json!(stamp(c.created)));
        m.insert("systemModstamp".into(), json!(stamp(c.modstamp)));
        m.insert("state".into(), json!(c.state.as_str()));
        if let Some(f) = &self.external_id {
            m.insert("externalIdFieldName".into(), json!(f));
        }
        if let Some(r) = &self.assignment_rule_id {
            m.insert("assignmentRuleId".into(), json!(r));
        }
        m.insert("concurrencyMode".into(), json!("Parallel"));
        m.insert("contentType".into(), json!("CSV"));
        m.insert("apiVersion".into(), json!(c.api_version));
        m.insert("contentUrl".into(), json!(format!("services/data/v{version}/jobs/ingest/{}/batches", c.id)));
        m.insert("lineEnding".into(), json!(c.line_ending.as_str()));
        m.insert("columnDelimiter".into(), json!(c.delimiter.as_str()));
        Value::Object(m)
    }

    pub fn full_json(&self, version: &str) -> Value {
        let mut v = self.json(version);
        if let Value::Object(m) = &mut v {
            m.insert("jobType".into(), json!("V2Ingest"));
            m.insert("numberRecordsProcessed".into(), json!(self.processed));
            m.insert("numberRecordsFailed".into(), json!(self.failed));
            m.insert("retries".into(), json!(self.retries));
            m.insert("totalProcessingTime".into(), json!(self.total_ms));
            m.insert("apiActiveProcessingTime".into(), json!(self.api_active_ms));
            m.insert("apexProcessingTime".into(), json!(self.apex_ms));
            if let Some(e) = &self.common.error_message {
                m.insert("errorMessage".into(), json!(e));
            }
        }
        v
    }

    fn header_line(&self, prefix: &[&str]) -> Vec<u8> {
        let mut w = RowWriter::new(self.common.delimiter, self.common.line_ending);
        w.row(prefix.iter().map(|s| s.as_bytes()).chain(self.header.iter().map(String::as_bytes)));
        w.finish()
    }

    /// The input rows not consumed by processing, in their original columns.
    fn unprocessed_csv(&self) -> Vec<u8> {
        let mut w = RowWriter::new(self.common.delimiter, self.common.line_ending);
        let Some(data) = &self.data else {
            return w.finish();
        };
        let mut r = csvio::reader(data, self.common.delimiter, self.common.line_ending);
        let mut rows = r.byte_records();
        if let Some(Ok(header)) = rows.next() {
            w.row(header.iter());
        }
        for row in rows.skip(self.rows_done).flatten() {
            w.row(row.iter());
        }
        w.finish()
    }
}

pub fn handle(st: &SfState, ctx: &CallCtx, db: &mut Db, req: &DataRequest<'_>, seg: &[&str]) -> Resp {
    match (&req.method, seg) {
        (&Method::POST, []) => create(st, ctx, db, req),
        (&Method::GET, []) => list(st, ctx),
        (m, []) => Resp::method_not_allowed(m, "GET,POST"),
        (&Method::GET, [id]) => info(st, ctx, id),
        (&Method::PATCH, [id]) => change_state(st, ctx, req, id),
        (&Method::DELETE, [id]) => delete(st, id),
        (m, [_]) => Resp::method_not_allowed(m, "GET,PATCH,DELETE"),
        (&Method::PUT, [id, "batches"]) => upload(st, ctx, req, id),
        (m, [_, "batches"]) => Resp::method_not_allowed(m, "PUT"),
        (&Method::GET, [id, kind]) => results(st, id, kind),
        _ => Resp::not_found(),
    }
}

/// Finds a job by its 15- or 18-character ID.
fn canonical_id(id: &str) -> String {
    crate::salesforce::ids::normalize(id).unwrap_or_else(|| id.to_string())
}

fn create(st: &SfState, ctx: &CallCtx, db: &Db, req: &DataRequest<'_>) -> Resp {
    let body = match req.json_object() {
        Ok(b) => b,
        Err(r) => return r,
    };
    let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let operation_raw = text("operation");
    let Some(operation) = Operation::parse(&operation_raw) else {
        return invalid_value("operation", &operation_raw);
    };
    let content_type = body.get("contentType").and_then(Value::as_str).unwrap_or("CSV");
    if content_type != "CSV" {
        return invalid_value("contentType", content_type);
    }
    let delimiter_raw = body.get("columnDelimiter").and_then(Value::as_str).unwrap_or("COMMA");
    let Some(delimiter) = Delimiter::parse(delimiter_raw) else {
        return invalid_value("columnDelimiter", delimiter_raw);
    };
    let line_raw = body.get("lineEnding").and_then(Value::as_str).unwrap_or("LF");
    let Some(line_ending) = LineEnding::parse(line_raw) else {
        return invalid_value("lineEnding", line_raw);
    };
    let object_raw = text("object");
    let Some(obj) = db.schema.object(&object_raw) else {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALIDJOB",
            format!("InvalidJob : Unable to find object: {object_raw}"),
        );
    };
    if !obj.createable {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALIDENTITY",
            format!("Entity '{}' is not supported by the Bulk API.", obj.name),
        );
    }
    let external_id = if operation == Operation::Upsert {
        let raw = text("externalIdFieldName");
        if raw.is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALIDJOB",
                format!(
                    "InvalidJob : External ID was blank for {}. An External ID must be specified for upsert.",
                    obj.name
                ),
            );
        }
        match obj.field(&raw).filter(|f| f.external_id || f.field_type == FieldType::Id) {
            Some(f) => Some(f.name.clone()),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALIDJOB",
                    format!("InvalidJob : Field name provided, {raw} does not match an External ID for {}", obj.name),
                );
            }
        }
    } else {
        None
    };
    {
        let now = st.clock.now();
        let mut acc = st.accounting.lock();
        if acc.bulk_batches.exhausted(now) {
            return error(StatusCode::BAD_REQUEST, "EXCEEDED_QUOTA", "ExceededQuota : ApiBatchItems Limit exceeded.");
        }
    }
    let mut jobs = st.bulk.lock();
    jobs.prune();
    let id = jobs.next_id();
    let job = IngestJob {
        common: JobCommon {
            id: id.clone(),
            created_by: ctx.user_id.clone(),
            created: ctx.now,
            modstamp: ctx.now,
            state: JobState::Open,
            api_version: ctx.version_num,
            delimiter,
            line_ending,
            error_message: None,
        },
        object: obj.name.clone(),
        operation,
        external_id,
        assignment_rule_id: body.get("assignmentRuleId").and_then(Value::as_str).map(str::to_string),
        data: None,
        uploads: 0,
        processed: 0,
        failed: 0,
        retries: 0,
        total_ms: 0,
        api_active_ms: 0,
        apex_ms: 0,
        header: Vec::new(),
        successful: Vec::new(),
        failed_rows: Vec::new(),
        rows_done: 0,
    };
    let v = job.json(&ctx.version);
    jobs.ingest.insert(id, job);
    Resp::ok(v)
}

fn list(st: &SfState, ctx: &CallCtx) -> Resp {
    let jobs = st.bulk.lock();
    let records: Vec<Value> = jobs.ingest.values().map(|j| j.full_json(&ctx.version)).collect();
    Resp::ok(json!({"done": true, "records": records, "nextRecordsUrl": null}))
}

fn info(st: &SfState, ctx: &CallCtx, id: &str) -> Resp {
    let jobs = st.bulk.lock();
    match jobs.ingest.get(&canonical_id(id)) {
        Some(j) => Resp::ok(j.full_json(&ctx.version)),
        None => job_not_found(),
    }
}

fn upload(st: &SfState, ctx: &CallCtx, req: &DataRequest<'_>, id: &str) -> Resp {
    let mut jobs = st.bulk.lock();
    let Some(job) = jobs.ingest.get_mut(&canonical_id(id)) else {
        return job_not_found();
    };
    if job.common.state != JobState::Open {
        return error(
            StatusCode::CONFLICT,
            "INVALIDJOBSTATE",
            format!(
                "InvalidJobState : Data can only be uploaded to an Open job; this job is {}",
                job.common.state.as_str()
            ),
        );
    }
    job.uploads += 1;
    if job.data.is_none() {
        job.data = Some(Bytes::copy_from_slice(req.body));
    }
    job.common.modstamp = ctx.now;
    Resp { status: StatusCode::CREATED, body: RespBody::Empty, headers: Vec::new() }
}

fn change_state(st: &SfState, ctx: &CallCtx, req: &DataRequest<'_>, id: &str) -> Resp {
    let body = match req.json_object() {
        Ok(b) => b,
        Err(r) => return r,
    };
    let wanted = body.get("state").and_then(Value::as_str).unwrap_or("").to_string();
    let mut jobs = st.bulk.lock();
    let Some(job) = jobs.ingest.get_mut(&canonical_id(id)) else {
        return job_not_found();
    };
    let from = job.common.state;
    match wanted.as_str() {
        "UploadComplete" => {
            if from != JobState::Open {
                return bad_transition(from, &wanted);
            }
            if job.uploads > 1 {
                let id15 = &job.common.id[..15];
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALIDJOB",
                    format!(
                        "Found multipe contents for job: <{id15}>, please 'Close' / 'Abort' / 'Delete' the current Job then create a new Job and make sure you only do 'PUT' once on a given Job."
                    ),
                );
            }
            job.common.state = JobState::UploadComplete;
            job.common.modstamp = ctx.now;
            let v = job.json(&ctx.version);
            let job_id = job.common.id.clone();
            drop(jobs);
            super::process::start(st.clone(), job_id);
            Resp::ok(v)
        }
        "Aborted" => {
            if from.is_terminal() {
                return bad_transition(from, &wanted);
            }
            job.common.state = JobState::Aborted;
            job.common.modstamp = ctx.now;
            Resp::ok(job.json(&ctx.version))
        }
        _ => invalid_value("state", &wanted),
    }
}

fn bad_transition(from: JobState, to: &str) -> Resp {
    error(
        StatusCode::BAD_REQUEST,
        "INVALIDJOBSTATE",
        format!("InvalidJobState : Invalid job state transition from {} to {to}", from.as_str()),
    )
}

fn delete(st: &SfState, id: &str) -> Resp {
    let mut jobs = st.bulk.lock();
    let id = canonical_id(id);
    let Some(job) = jobs.ingest.get(&id) else {
        return job_not_found();
    };
    if matches!(job.common.state, JobState::Open | JobState::InProgress) {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALIDJOBSTATE",
            format!(
                "InvalidJobState : Job can only be deleted when UploadComplete, JobComplete, Aborted or Failed; it is {}",
                job.common.state.as_str()
            ),
        );
    }
    jobs.ingest.shift_remove(&id);
    Resp::no_content()
}

fn results(st: &SfState, id: &str, kind: &str) -> Resp {
    let jobs = st.bulk.lock();
    let Some(job) = jobs.ingest.get(&canonical_id(id)) else {
        return job_not_found();
    };
    let body = match kind {
        "successfulResults" => {
            let mut out = job.header_line(&["sf__Id", "sf__Created"]);
            out.extend_from_slice(&job.successful);
            out
        }
        "failedResults" => {
            let mut out = job.header_line(&["sf__Id", "sf__Error"]);
            out.extend_from_slice(&job.failed_rows);
            out
        }
        // jsforce asks for the documented lower-case `r`, simple-salesforce for the upper-case.
        "unprocessedrecords" | "unprocessedRecords" => job.unprocessed_csv(),
        _ => return Resp::not_found(),
    };
    drop(jobs);
    let text = String::from_utf8(body).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    Resp { status: StatusCode::OK, body: RespBody::Text(text, "text/csv"), headers: Vec::new() }
}
