//! Query jobs: `POST /jobs/query` runs a SOQL query (or queryAll) into a CSV result,
//! `GET /jobs/query/{id}` reports it and `GET /jobs/query/{id}/results` pages through the rows
//! with `maxRecords` and an opaque `locator`: every page is a complete CSV with its header, and
//! carries `Sforce-NumberOfRecords` and `Sforce-Locator` (the literal `null` on the last page,
//! which is what jsforce loops on).
//!
//! The query is checked and run when the job is created, under the org's lock like a REST query,
//! so syntax and schema errors answer 400 at once, and each row becomes a CSV line as it is
//! rendered; the job then moves `UploadComplete → InProgress → JobComplete` in the background,
//! and its rows are served once it is complete. `totalProcessingTime` is the query's and its
//! encoding's time.

use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::csvio::RowWriter;
use super::{Delimiter, JobCommon, JobState, LineEnding, error, invalid_value, job_not_found, stamp};
use crate::salesforce::response::{Resp, RespBody};
use crate::salesforce::rest::{CallCtx, DataRequest};
use crate::salesforce::soql;
use crate::salesforce::state::SfState;
use crate::salesforce::store::Db;

/// One query job.
#[derive(Debug, Clone)]
pub struct QueryJob {
    pub common: JobCommon,
    pub all_rows: bool,
    pub object: String,
    pub query: String,
    /// Result columns, in SELECT order.
    pub columns: Vec<String>,
    /// The result's CSV lines, encoded as the query ran; served once the job is complete.
    pub rows: Arc<CsvRows>,
    pub processed: u64,
    pub total_ms: u64,
}

/// A query's result as CSV lines (no header) in one buffer: a million rows are a million
/// lines of text, not a million JSON records or a million small allocations.
#[derive(Debug, Default)]
pub struct CsvRows {
    bytes: Vec<u8>,
    /// Where each line ends in `bytes`.
    ends: Vec<usize>,
}

impl CsvRows {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The bytes of lines `from..to`.
    fn lines(&self, from: usize, to: usize) -> &[u8] {
        let start = if from == 0 { 0 } else { self.ends[from - 1] };
        let end = if to == 0 { 0 } else { self.ends[to - 1] };
        &self.bytes[start..end]
    }
}

impl QueryJob {
    pub fn json(&self, full: bool) -> Value {
        let c = &self.common;
        let mut m = Map::new();
        m.insert("id".into(), json!(c.id));
        m.insert("operation".into(), json!(if self.all_rows { "queryAll" } else { "query" }));
        m.insert("object".into(), json!(self.object));
        m.insert("createdById".into(), json!(c.created_by));
        m.insert("createdDate".into(), json!(stamp(c.created)));
        m.insert("systemModstamp".into(), json!(stamp(c.modstamp)));
        m.insert("state".into(), json!(c.state.as_str()));
        m.insert("concurrencyMode".into(), json!("Parallel"));
        m.insert("contentType".into(), json!("CSV"));
        m.insert("apiVersion".into(), json!(c.api_version));
        m.insert("lineEnding".into(), json!(c.line_ending.as_str()));
        m.insert("columnDelimiter".into(), json!(c.delimiter.as_str()));
        if full {
            m.insert("jobType".into(), json!("V2Query"));
            m.insert("numberRecordsProcessed".into(), json!(self.processed));
            m.insert("retries".into(), json!(0));
            m.insert("totalProcessingTime".into(), json!(self.total_ms));
            m.insert("isPkChunkingSupported".into(), json!(false));
            if let Some(e) = &c.error_message {
                m.insert("errorMessage".into(), json!(e));
            }
        }
        Value::Object(m)
    }
}

pub fn handle(st: &SfState, ctx: &CallCtx, db: &mut Db, req: &DataRequest<'_>, seg: &[&str]) -> Resp {
    match (&req.method, seg) {
        (&Method::POST, []) => create(st, ctx, db, req),
        (&Method::GET, []) => {
            let jobs = st.bulk.lock();
            let records: Vec<Value> = jobs.query.values().map(|j| j.json(true)).collect();
            Resp::ok(json!({"done": true, "records": records, "nextRecordsUrl": null}))
        }
        (m, []) => Resp::method_not_allowed(m, "GET,POST"),
        (&Method::GET, [id]) => match st.bulk.lock().query.get(&canonical(id)) {
            Some(j) => Resp::ok(j.json(true)),
            None => job_not_found(),
        },
        (&Method::PATCH, [id]) => abort(st, ctx, req, id),
        (&Method::DELETE, [id]) => {
            let mut jobs = st.bulk.lock();
            let id = canonical(id);
            match jobs.query.get(&id).map(|j| j.common.state) {
                None => job_not_found(),
                Some(JobState::InProgress) => error(
                    StatusCode::BAD_REQUEST,
                    "INVALIDJOBSTATE",
                    "InvalidJobState : Job can only be deleted when JobComplete, Aborted or Failed; it is InProgress",
                ),
                Some(_) => {
                    jobs.query.shift_remove(&id);
                    Resp::no_content()
                }
            }
        }
        (m, [_]) => Resp::method_not_allowed(m, "GET,PATCH,DELETE"),
        (&Method::GET, [id, "results"]) => results(st, req, id),
        _ => Resp::not_found(),
    }
}

fn canonical(id: &str) -> String {
    crate::salesforce::ids::normalize(id).unwrap_or_else(|| id.to_string())
}

fn create(st: &SfState, ctx: &CallCtx, db: &Db, req: &DataRequest<'_>) -> Resp {
    let body = match req.json_object() {
        Ok(b) => b,
        Err(r) => return r,
    };
    let operation = body.get("operation").and_then(Value::as_str).unwrap_or("");
    let all_rows = match operation {
        "query" => false,
        "queryAll" => true,
        other => return invalid_value("operation", other),
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
    let Some(text) = body.get("query").and_then(Value::as_str).filter(|q| !q.trim().is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "API_ERROR", "Invalid value: '' supplied for property: 'query'");
    };
    let parsed = match soql::parse(text) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.code, e.message),
    };
    if parsed.has_subqueries() {
        return error(
            StatusCode::BAD_REQUEST,
            "API_ERROR",
            "FeatureNotEnabled : Aggregate Relationships not supported in Bulk Query",
        );
    }
    let Some(columns) = parsed.select_paths() else {
        return error(
            StatusCode::BAD_REQUEST,
            "API_ERROR",
            "FeatureNotEnabled : Aggregate queries are not supported with Bulk API 2.0",
        );
    };
    let quota_gone =
        || error(StatusCode::BAD_REQUEST, "EXCEEDED_QUOTA", "ExceededQuota : DailyBulkV2QueryJobs Limit exceeded.");
    // No rows are made for a job the quota refuses; a query that fails takes no job from it.
    if st.accounting.lock().bulk_query_jobs.exhausted(st.clock.now()) {
        return quota_gone();
    }
    // The rows become CSV as the query renders them: holding a million-row result as JSON
    // records first took gigabytes.
    let started = Instant::now();
    let mut csv = CsvRows::default();
    let ran = soql::execute_each(&parsed, db, all_rows, &ctx.version, ctx.now.date_naive(), |rec| {
        let mut w = RowWriter::new(delimiter, line_ending);
        w.row(columns.iter().map(|c| cell(&rec, c)));
        csv.bytes.extend_from_slice(&w.finish());
        csv.ends.push(csv.bytes.len());
    });
    if let Err(e) = ran {
        return error(StatusCode::BAD_REQUEST, e.code, e.message);
    }
    csv.bytes.shrink_to_fit();
    csv.ends.shrink_to_fit();
    if !st.accounting.lock().bulk_query_jobs.try_take(st.clock.now()) {
        return quota_gone();
    }
    let object = db.schema.object(parsed.object()).map_or_else(|| parsed.object().to_string(), |o| o.name.clone());
    let mut jobs = st.bulk.lock();
    jobs.prune();
    let id = jobs.next_id();
    let job = QueryJob {
        common: JobCommon {
            id: id.clone(),
            created_by: ctx.user_id.clone(),
            created: ctx.now,
            modstamp: ctx.now,
            state: JobState::UploadComplete,
            api_version: ctx.version_num,
            delimiter,
            line_ending,
            error_message: None,
        },
        all_rows,
        object,
        query: text.to_string(),
        columns,
        rows: Arc::new(csv),
        processed: 0,
        total_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let v = job.json(false);
    jobs.query.insert(id.clone(), job);
    drop(jobs);
    let st = st.clone();
    tokio::spawn(async move { complete(st, id).await });
    Resp::ok(v)
}

/// The worker: moves the job through `InProgress` to `JobComplete`, as Salesforce's query jobs
/// run in the background after they are created.
async fn complete(st: SfState, id: String) {
    {
        let mut jobs = st.bulk.lock();
        let Some(job) = jobs.query.get_mut(&id) else { return };
        if job.common.state != JobState::UploadComplete {
            return;
        }
        job.common.state = JobState::InProgress;
        job.common.modstamp = st.clock.now();
    }
    tokio::task::yield_now().await;
    let now = st.clock.now();
    let mut jobs = st.bulk.lock();
    if let Some(job) = jobs.query.get_mut(&id)
        && job.common.state == JobState::InProgress
    {
        job.processed = job.rows.len() as u64;
        job.common.state = JobState::JobComplete;
        job.common.modstamp = now;
    }
}

/// The CSV text of one selected path (`Account.Name`) in a record with nested parents; empty
/// when a parent or the value is null.
fn cell(record: &Value, path: &str) -> String {
    let mut v = record;
    for part in path.split('.') {
        let Value::Object(m) = v else { return String::new() };
        let found = m.get(part).or_else(|| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(part)).map(|(_, v)| v));
        match found {
            Some(next) => v = next,
            None => return String::new(),
        }
    }
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

fn abort(st: &SfState, ctx: &CallCtx, req: &DataRequest<'_>, id: &str) -> Resp {
    let body = match req.json_object() {
        Ok(b) => b,
        Err(r) => return r,
    };
    let wanted = body.get("state").and_then(Value::as_str).unwrap_or("");
    if wanted != "Aborted" {
        return invalid_value("state", wanted);
    }
    let mut jobs = st.bulk.lock();
    let Some(job) = jobs.query.get_mut(&canonical(id)) else {
        return job_not_found();
    };
    if job.common.state.is_terminal() {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALIDJOBSTATE",
            format!("InvalidJobState : Invalid job state transition from {} to Aborted", job.common.state.as_str()),
        );
    }
    job.common.state = JobState::Aborted;
    job.common.modstamp = ctx.now;
    Resp::ok(job.json(false))
}

fn encode_locator(offset: usize) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(offset.to_string())
}

fn decode_locator(locator: &str) -> Option<usize> {
    let raw = base64::engine::general_purpose::STANDARD_NO_PAD.decode(locator.trim_end_matches('=')).ok()?;
    String::from_utf8(raw).ok()?.parse().ok()
}

fn results(st: &SfState, req: &DataRequest<'_>, id: &str) -> Resp {
    let (state, rows, columns, delimiter, line_ending) = {
        let jobs = st.bulk.lock();
        let Some(job) = jobs.query.get(&canonical(id)) else {
            return job_not_found();
        };
        (job.common.state, Arc::clone(&job.rows), job.columns.clone(), job.common.delimiter, job.common.line_ending)
    };
    if state != JobState::JobComplete {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALIDJOBSTATE",
            format!("InvalidJobState : Results are available once the job is JobComplete; it is {}", state.as_str()),
        );
    }
    let offset = match req.param("locator").filter(|l| !l.is_empty()) {
        None => 0,
        Some(l) => match decode_locator(l).filter(|o| *o <= rows.len()) {
            Some(o) => o,
            None => return error(StatusCode::BAD_REQUEST, "INVALID_LOCATOR", format!("Invalid locator: {l}")),
        },
    };
    let max = match req.param("maxRecords") {
        None => usize::MAX,
        Some(m) => match m.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => return invalid_value("maxRecords", m),
        },
    };
    let end = offset.saturating_add(max).min(rows.len());
    let mut w = RowWriter::new(delimiter, line_ending);
    w.row(columns.iter());
    let mut out = w.finish();
    out.extend_from_slice(rows.lines(offset, end));
    let locator = if end < rows.len() { encode_locator(end) } else { "null".to_string() };
    let text = String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    Resp { status: StatusCode::OK, body: RespBody::Text(text, "text/csv"), headers: Vec::new() }
        .with_header("Sforce-Locator", locator)
        .with_header("Sforce-NumberOfRecords", (end - offset).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locators_round_trip_and_look_like_salesforce() {
        assert_eq!(encode_locator(10000), "MTAwMDA");
        assert_eq!(decode_locator("MTAwMDA"), Some(10000));
        assert_eq!(decode_locator("not base64!"), None);
    }

    #[test]
    fn cells_flatten_parents() {
        let rec =
            json!({"attributes": {}, "Name": "A", "Account": {"Name": "Acme", "Owner": null}, "N": 1.5, "B": true});
        assert_eq!(cell(&rec, "Name"), "A");
        assert_eq!(cell(&rec, "account.name"), "Acme");
        assert_eq!(cell(&rec, "Account.Owner.Name"), "");
        assert_eq!(cell(&rec, "N"), "1.5");
        assert_eq!(cell(&rec, "B"), "true");
    }
}
