//! Bulk API 2.0: load records through ingest jobs and read objects through query jobs, a
//! handful of API calls for any number of records.
//!
//! [`crate::Client::bulk_ingest`] takes any iterator of serialisable records and never holds
//! them all: each record becomes one CSV row written straight to a spool file, a new job starts
//! when the file would pass [`IngestOptions::max_job_bytes`], and each job goes create →
//! upload (streamed from the file) → close → poll (capped exponential backoff) → results. The
//! results come back as one [`RowOutcome`] per input row, matched to the row's position:
//! Salesforce does not keep result order, so rows are matched by the input values it echoes.
//!
//! A job whose id was saved before a restart is finished with
//! [`crate::Client::resume_ingest_job`]; [`crate::Client::bulk_query`] streams a query job's
//! rows page by page (`Sforce-Locator`).
//!
//! # Layout
//! - this file: job info, options and outcome types.
//! - `job` — the job resources (create, upload, close, abort, delete, info, poll).
//! - `spool` — records to CSV rows in a spool file, and the row fingerprints that match
//!   results back to input rows.
//! - `ingest` — the whole ingest flow and result reading.
//! - `query` — query jobs as a stream of typed rows.

mod ingest;
mod job;
mod query;
mod spool;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::RecordError;
use crate::ids::SalesforceId;

pub use query::BulkQueryOptions;

/// Salesforce's ceiling on one upload: 150 MB after base64 encoding, so 100 MB of raw CSV.
pub const BULK_MAX_UPLOAD_BYTES: u64 = 100_000_000;
/// Default size at which a new job starts: below the ceiling, with room for encoding slack.
pub const DEFAULT_MAX_JOB_BYTES: u64 = 95_000_000;

/// `operation` of an ingest job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Operation {
    /// Create records.
    Insert,
    /// Update records by `Id`.
    Update,
    /// Upsert on [`IngestOptions::external_id_field`].
    Upsert,
    /// Delete (to the recycle bin) by `Id`.
    Delete,
    /// Delete for good by `Id` (needs the "Bulk API Hard Delete" permission).
    HardDelete,
}

/// `columnDelimiter` of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ColumnDelimiter {
    /// `,`
    #[default]
    Comma,
    /// `\t`
    Tab,
    /// `|`
    Pipe,
    /// `;`
    Semicolon,
    /// `^`
    Caret,
    /// `` ` ``
    Backquote,
}

impl ColumnDelimiter {
    pub(crate) fn byte(self) -> u8 {
        match self {
            Self::Comma => b',',
            Self::Tab => b'\t',
            Self::Pipe => b'|',
            Self::Semicolon => b';',
            Self::Caret => b'^',
            Self::Backquote => b'`',
        }
    }
}

/// `lineEnding` of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LineEnding {
    /// `\n`
    #[default]
    Lf,
    /// `\r\n`
    Crlf,
}

/// A job's state: `Open → UploadComplete → InProgress → JobComplete | Failed | Aborted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// Created; data may be uploaded.
    Open,
    /// Closed; waiting to be processed.
    UploadComplete,
    /// Being processed.
    InProgress,
    /// Done. Individual rows may still have failed: see `numberRecordsFailed`.
    JobComplete,
    /// Failed as a whole; `errorMessage` says why.
    Failed,
    /// Aborted by a client.
    Aborted,
    /// Any other state, verbatim.
    #[serde(untagged)]
    Other(String),
}

impl JobState {
    /// Whether the job will not change any more.
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::JobComplete | Self::Failed | Self::Aborted)
    }

    /// The state as Salesforce spells it.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Open => "Open",
            Self::UploadComplete => "UploadComplete",
            Self::InProgress => "InProgress",
            Self::JobComplete => "JobComplete",
            Self::Failed => "Failed",
            Self::Aborted => "Aborted",
            Self::Other(s) => s,
        }
    }
}

/// Job info as `GET /jobs/ingest/{id}` (or `/jobs/query/{id}`) answers it. Fields absent from
/// the create and close responses default to zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobInfo {
    /// Job ID (`750…`).
    pub id: String,
    /// `insert`, `upsert`, …, or `query` / `queryAll`.
    pub operation: String,
    /// The sObject.
    pub object: String,
    /// Current state.
    pub state: JobState,
    /// Upsert key.
    #[serde(default)]
    pub external_id_field_name: Option<String>,
    /// `V2Ingest` or `V2Query` (only in `GET` answers).
    #[serde(default)]
    pub job_type: Option<String>,
    /// API version the job was created with.
    #[serde(default)]
    pub api_version: Option<f64>,
    /// Rows processed so far.
    #[serde(default)]
    pub number_records_processed: u64,
    /// Rows that failed so far.
    #[serde(default)]
    pub number_records_failed: u64,
    /// Internal batch retries.
    #[serde(default)]
    pub retries: u64,
    /// Milliseconds.
    #[serde(default)]
    pub total_processing_time: u64,
    /// Why the job failed.
    #[serde(default)]
    pub error_message: Option<String>,
    /// The job's CSV delimiter.
    #[serde(default)]
    pub column_delimiter: ColumnDelimiter,
    /// The job's CSV line ending.
    #[serde(default)]
    pub line_ending: LineEnding,
}

/// How to wait for a job: real time, capped exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollPolicy {
    /// The first wait after closing the job (stretched for big jobs, see `per_record`).
    pub initial: Duration,
    /// Added to the first wait per record uploaded, so a big job is not polled while it
    /// cannot possibly be done (every poll is an API call). The default, 20 µs, is 50,000
    /// rows a second: faster than an org's Bulk processing is expected to be (the planner
    /// prices it far slower), so the first poll comes no later than a fast org needs.
    pub per_record: Duration,
    /// Growth factor between polls.
    pub factor: f64,
    /// Longest wait between two polls.
    pub max: Duration,
    /// Give up waiting (the job keeps running; resume it by id) after this long.
    pub timeout: Duration,
}

impl Default for PollPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            per_record: Duration::from_micros(20),
            factor: 2.0,
            max: Duration::from_secs(30),
            timeout: Duration::from_secs(3600),
        }
    }
}

impl PollPolicy {
    /// The wait before poll number `n` (0-based) of a job of `records` rows.
    #[must_use]
    pub fn delay(&self, n: u32, records: u64) -> Duration {
        let stretch = self.per_record.saturating_mul(u32::try_from(records).unwrap_or(u32::MAX));
        let first = (self.initial + stretch).min(self.max);
        let factor = self.factor.max(1.0).powi(i32::try_from(n).unwrap_or(i32::MAX));
        Duration::from_secs_f64((first.as_secs_f64() * factor).min(self.max.as_secs_f64()))
    }

    /// The wait before poll number `n` once the last poll saw `processed` of `records` rows
    /// done `elapsed` after the job was closed: the time the rest should take at the rate so
    /// far, a tenth more, so a job that reports progress is polled about once more, when it
    /// should be done, rather than on a backoff that may poll it several times before then
    /// (every poll is an API call). Without progress to go by (nothing processed yet, or the
    /// row count unknown), [`PollPolicy::delay`]. Never shorter than `initial` nor longer
    /// than `max`.
    #[must_use]
    pub fn delay_after(&self, n: u32, records: u64, processed: u64, elapsed: Duration) -> Duration {
        if processed == 0 || processed >= records || elapsed.is_zero() {
            return self.delay(n, records);
        }
        #[allow(clippy::cast_precision_loss)] // row counts far below 2^52
        let left = (records - processed) as f64 * elapsed.as_secs_f64() / processed as f64;
        Duration::from_secs_f64(
            (left * 1.1).clamp(self.initial.as_secs_f64(), self.max.as_secs_f64().max(self.initial.as_secs_f64())),
        )
    }
}

/// What to load and how.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// sObject API name.
    pub object: String,
    /// What to do with each row.
    pub operation: Operation,
    /// Upsert key (required for [`Operation::Upsert`]).
    pub external_id_field: Option<String>,
    /// Column order. `None` takes the first record's fields; a later record with a field
    /// outside the columns is an error (a job's header is fixed).
    pub columns: Option<Vec<String>>,
    /// CSV delimiter.
    pub delimiter: ColumnDelimiter,
    /// CSV line ending.
    pub line_ending: LineEnding,
    /// A new job starts before its CSV would pass this many bytes.
    pub max_job_bytes: u64,
    /// How to wait for each job.
    pub poll: PollPolicy,
}

impl IngestOptions {
    /// Options for `operation` on `object` with the defaults.
    #[must_use]
    pub fn new(object: impl Into<String>, operation: Operation) -> Self {
        Self {
            object: object.into(),
            operation,
            external_id_field: None,
            columns: None,
            delimiter: ColumnDelimiter::default(),
            line_ending: LineEnding::default(),
            max_job_bytes: DEFAULT_MAX_JOB_BYTES,
            poll: PollPolicy::default(),
        }
    }

    /// An upsert on `field`.
    #[must_use]
    pub fn upsert(object: impl Into<String>, field: impl Into<String>) -> Self {
        Self { external_id_field: Some(field.into()), ..Self::new(object, Operation::Upsert) }
    }
}

/// What happened to one input row.
#[derive(Debug, Clone, PartialEq)]
pub enum RowStatus {
    /// Saved (`created` is `sf__Created`: true for inserts and upserts that inserted).
    Success {
        /// Whether a record was created.
        created: bool,
    },
    /// Salesforce refused the row (`sf__Error`); `UNABLE_TO_LOCK_ROW` is worth re-sending.
    Failed(RecordError),
    /// Never processed, because its job failed or was aborted first: safe to re-send.
    Unprocessed,
}

/// One input row's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct RowOutcome {
    /// The row's position in the input, counting from 0 across all jobs. `None` for a result
    /// that matches no input row (possible only when reading a resumed job's results, which
    /// has no input to match, or when Salesforce altered an echoed value).
    pub index: Option<u64>,
    /// The job that carried the row.
    pub job_id: String,
    /// `sf__Id`: the record's ID (empty for failed inserts).
    pub id: Option<SalesforceId>,
    /// What happened.
    pub status: RowStatus,
    /// The input columns as Salesforce echoed them (names, values), in header order.
    pub input: Vec<(String, String)>,
}

impl RowOutcome {
    /// The echoed input value of `column`.
    #[must_use]
    pub fn input_value(&self, column: &str) -> Option<&str> {
        self.input.iter().find(|(c, _)| c == column).map(|(_, v)| v.as_str())
    }
}

/// A finished ingest: the jobs it took and counts of outcomes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestSummary {
    /// Final info of each job, in order.
    pub jobs: Vec<JobInfo>,
    /// Input rows read.
    pub rows: u64,
    /// Rows saved.
    pub succeeded: u64,
    /// Rows refused.
    pub failed: u64,
    /// Rows left unprocessed by a failed or aborted job.
    pub unprocessed: u64,
    /// Result rows that matched no input row (see [`RowOutcome::index`]).
    pub unmatched: u64,
}

/// A finished ingest with every row's outcome in memory (see
/// [`crate::Client::bulk_ingest_with`] to handle outcomes one at a time instead).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestReport {
    /// Counts and jobs.
    pub summary: IngestSummary,
    /// One outcome per input row, ordered by input position.
    pub outcomes: Vec<RowOutcome>,
}

/// Parses one `sf__Error` value: `STATUS_CODE:message:field1,field2 --` (several errors are
/// separated by ` -- `; the first one is kept).
#[must_use]
pub fn parse_bulk_error(text: &str) -> RecordError {
    let first = text.split(" -- ").next().unwrap_or(text);
    let first = first.trim_end().trim_end_matches("--").trim_end();
    let (code, rest) = first.split_once(':').unwrap_or((first, ""));
    let (message, fields) = match rest.rsplit_once(':') {
        Some((m, f)) if !f.contains(' ') => (m, f),
        _ => (rest, ""),
    };
    let raw = serde_json::json!({
        "statusCode": code.trim(),
        "message": message,
        "fields": fields.split(',').map(str::trim).filter(|f| !f.is_empty()).collect::<Vec<_>>(),
    });
    serde_json::from_value(raw).unwrap_or_else(|_| fallback_error(text))
}

fn fallback_error(text: &str) -> RecordError {
    let raw = serde_json::json!({"statusCode": "UNKNOWN_EXCEPTION", "message": text, "fields": []});
    // A literal object with the wire keys: decoding it cannot fail, but stay total anyway.
    serde_json::from_value(raw).unwrap_or(RecordError {
        status_code: crate::ErrorCode::UnknownException,
        message: text.to_owned(),
        fields: Vec::new(),
        duplicate_result: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn parses_documented_errors() {
        let e = parse_bulk_error("REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --");
        assert_eq!(e.status_code, ErrorCode::RequiredFieldMissing);
        assert_eq!(e.message, "Required fields are missing: [Name]");
        assert_eq!(e.fields, vec!["Name"]);
        let e = parse_bulk_error(
            "UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to this record or 200 records: 001x,001y:--",
        );
        assert_eq!(e.status_code, ErrorCode::UnableToLockRow);
        assert_eq!(e.message, "unable to obtain exclusive access to this record or 200 records: 001x,001y");
        assert!(e.fields.is_empty());
        assert!(e.retry_class().is_retryable());
        let e = parse_bulk_error("A:one:X -- B:two:Y --");
        assert_eq!((e.status_code.as_str(), e.message.as_str()), ("A", "one"));
    }

    #[test]
    fn poll_delays_grow_and_cap() {
        let p = PollPolicy::default();
        assert_eq!(p.delay(0, 0), Duration::from_millis(250));
        assert_eq!(p.delay(1, 0), Duration::from_millis(500));
        assert_eq!(p.delay(0, 100_000), Duration::from_millis(2250));
        assert_eq!(p.delay(30, 0), p.max);
    }

    #[test]
    fn a_job_showing_progress_is_polled_when_it_should_be_done() {
        let p = PollPolicy::default();
        // 60,000 of 90,000 rows in 2 s: the rest takes 1 s, waited with a tenth to spare,
        // where the backoff would poll after 2.2 s's doubling again.
        assert_eq!(p.delay_after(1, 90_000, 60_000, Duration::from_secs(2)), Duration::from_millis(1100));
        // Nearly done: no sooner than the first wait.
        assert_eq!(p.delay_after(1, 90_000, 89_999, Duration::from_secs(2)), p.initial);
        // A crawl: no longer than the cap.
        assert_eq!(p.delay_after(1, 1_000_000, 10, Duration::from_secs(60)), p.max);
        // Nothing to go by: the backoff.
        assert_eq!(p.delay_after(2, 90_000, 0, Duration::from_secs(2)), p.delay(2, 90_000));
        assert_eq!(p.delay_after(2, 0, 5_000, Duration::from_secs(2)), p.delay(2, 0));
    }

    #[test]
    fn job_info_decodes_documented_shapes() {
        let created = r#"{"id":"7502M00000aFzAIQA0","operation":"upsert","object":"Account","createdById":"005x",
            "createdDate":"2020-03-21T20:03:25.000+0000","systemModstamp":"2020-03-21T20:03:25.000+0000",
            "state":"Open","externalIdFieldName":"values__c","concurrencyMode":"Parallel","contentType":"CSV",
            "apiVersion":47.0,"contentUrl":"services/data/v47.0/jobs/ingest/7502M00000aFzAIQA0/batches",
            "lineEnding":"LF","columnDelimiter":"COMMA"}"#;
        let j: JobInfo = serde_json::from_str(created).unwrap();
        assert_eq!(j.state, JobState::Open);
        assert_eq!(j.api_version, Some(47.0));
        let odd: JobInfo =
            serde_json::from_str(r#"{"id":"750","operation":"query","object":"A","state":"Paused"}"#).unwrap();
        assert_eq!(odd.state, JobState::Other("Paused".into()));
    }
}
