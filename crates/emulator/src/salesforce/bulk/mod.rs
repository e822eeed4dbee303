//! Bulk API 2.0 under `/services/data/vXX.X/jobs/`: ingest jobs (create, one CSV upload, close,
//! abort, info, list, delete, results as CSV) and query jobs (create, info, paged CSV results
//! with `Sforce-Locator`), processed in the background on the emulator's clock.
//!
//! # Layout
//! - this file: the job store kept in [`super::state::Inner`], the wire enums shared by both
//!   job kinds, routing and the error bodies Bulk API 2.0 answers with.
//! - [`ingest`]: ingest job resources and their JSON.
//! - [`process`]: the background worker that applies an uploaded CSV in 10,000-row chunks,
//!   taking the org's lock once per chunk so REST calls keep flowing while a job runs.
//! - [`query`]: query jobs and their result pages.
//! - [`csvio`]: CSV reading and writing with the job's delimiter and line ending.
//!
//! Every HTTP call here is one API call (counted by [`super::rest::handle`] as
//! `CallKind::Bulk`); an ingest job also consumes one `DailyBulkApiBatches` per internal batch of
//! 10,000 records and a query job one `DailyBulkV2QueryJobs`.

pub mod csvio;
pub mod ingest;
pub mod process;
pub mod query;

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use http::{Method, StatusCode};
use indexmap::IndexMap;

use super::ids::IdGenerator;
use super::response::Resp;
use super::rest::{CallCtx, DataRequest};
use super::state::SfState;
use super::store::Db;

/// Records per internal batch: Salesforce splits an ingest job into batches of this many
/// records, each counted against `DailyBulkApiBatches`.
pub const INTERNAL_BATCH_RECORDS: usize = 10_000;
/// Largest upload accepted for one job: 150 MB is Salesforce's documented ceiling (measured
/// after base64 encoding, which the emulator cannot see; it applies it to the raw bytes).
pub const MAX_UPLOAD_BYTES: usize = 150_000_000;
/// Jobs kept at most; the oldest finished ones go first (Salesforce deletes them after 7 days).
const MAX_JOBS: usize = 10_000;

/// Ingest and query jobs, by ID in creation order.
#[derive(Debug)]
pub struct Jobs {
    pub ingest: IndexMap<String, ingest::IngestJob>,
    pub query: IndexMap<String, query::QueryJob>,
    ids: IdGenerator,
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs { ingest: IndexMap::new(), query: IndexMap::new(), ids: IdGenerator::new() }
    }
}

impl Jobs {
    /// A fresh job ID: key prefix `750`, 18 characters with a valid checksum.
    pub fn next_id(&self) -> String {
        self.ids.next_id("750")
    }

    /// Forgets every job (admin reset).
    pub fn clear(&mut self) {
        self.ingest.clear();
        self.query.clear();
    }

    /// Drops the oldest finished jobs once the store is full.
    fn prune(&mut self) {
        let mut finished: VecDeque<String> =
            self.ingest.iter().filter(|(_, j)| j.common.state.is_terminal()).map(|(k, _)| k.clone()).collect();
        while self.ingest.len() + self.query.len() >= MAX_JOBS {
            if let Some(id) = finished.pop_front() {
                self.ingest.shift_remove(&id);
            } else if let Some(id) =
                self.query.iter().find(|(_, j)| j.common.state.is_terminal()).map(|(k, _)| k.clone())
            {
                self.query.shift_remove(&id);
            } else {
                break;
            }
        }
    }
}

/// The job state machine: `Open → UploadComplete → InProgress → JobComplete | Failed`, and
/// `Aborted` from any state before the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Open,
    UploadComplete,
    InProgress,
    JobComplete,
    Failed,
    Aborted,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Open => "Open",
            JobState::UploadComplete => "UploadComplete",
            JobState::InProgress => "InProgress",
            JobState::JobComplete => "JobComplete",
            JobState::Failed => "Failed",
            JobState::Aborted => "Aborted",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::JobComplete | JobState::Failed | JobState::Aborted)
    }
}

/// `columnDelimiter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delimiter {
    Comma,
    Tab,
    Pipe,
    Semicolon,
    Caret,
    Backquote,
}

impl Delimiter {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "COMMA" => Delimiter::Comma,
            "TAB" => Delimiter::Tab,
            "PIPE" => Delimiter::Pipe,
            "SEMICOLON" => Delimiter::Semicolon,
            "CARET" => Delimiter::Caret,
            "BACKQUOTE" => Delimiter::Backquote,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Delimiter::Comma => "COMMA",
            Delimiter::Tab => "TAB",
            Delimiter::Pipe => "PIPE",
            Delimiter::Semicolon => "SEMICOLON",
            Delimiter::Caret => "CARET",
            Delimiter::Backquote => "BACKQUOTE",
        }
    }

    pub fn byte(self) -> u8 {
        match self {
            Delimiter::Comma => b',',
            Delimiter::Tab => b'\t',
            Delimiter::Pipe => b'|',
            Delimiter::Semicolon => b';',
            Delimiter::Caret => b'^',
            Delimiter::Backquote => b'`',
        }
    }
}

/// `lineEnding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnding {
    Lf,
    Crlf,
}

impl LineEnding {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "LF" => Some(LineEnding::Lf),
            "CRLF" => Some(LineEnding::Crlf),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LineEnding::Lf => "LF",
            LineEnding::Crlf => "CRLF",
        }
    }
}

/// What both job kinds share in their JSON.
#[derive(Debug, Clone)]
pub struct JobCommon {
    pub id: String,
    pub created_by: String,
    pub created: DateTime<Utc>,
    pub modstamp: DateTime<Utc>,
    pub state: JobState,
    pub api_version: f64,
    pub delimiter: Delimiter,
    pub line_ending: LineEnding,
    pub error_message: Option<String>,
}

/// A Bulk API 2.0 error body: the REST array shape with Bulk's own codes.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Resp {
    Resp::error(status, code, message)
}

pub fn invalid_value(property: &str, value: &str) -> Resp {
    error(StatusCode::BAD_REQUEST, "API_ERROR", format!("Invalid value: '{value}' supplied for property: '{property}'"))
}

/// Unknown job IDs answer 404 NOT_FOUND, as Salesforce does for any missing resource.
pub fn job_not_found() -> Resp {
    error(StatusCode::NOT_FOUND, "NOT_FOUND", "The requested resource does not exist")
}

/// Routes `/jobs/...` (the segments after `jobs`).
pub fn handle(st: &SfState, ctx: &CallCtx, db: &mut Db, req: &DataRequest<'_>, seg: &[&str]) -> Resp {
    match seg {
        ["ingest", rest @ ..] => ingest::handle(st, ctx, db, req, rest),
        ["query", rest @ ..] => query::handle(st, ctx, db, req, rest),
        [] => match req.method {
            Method::GET => Resp::not_found(),
            _ => Resp::method_not_allowed(&req.method, "GET"),
        },
        _ => Resp::not_found(),
    }
}

/// Whether a request is a job data upload, which gets the larger Bulk body limit.
pub fn is_upload(method: &Method, segments: &[String]) -> bool {
    *method == Method::PUT
        && segments.len() == 4
        && segments[0] == "jobs"
        && segments[1] == "ingest"
        && segments[3] == "batches"
}

/// The `createdDate` / `systemModstamp` wire format of Bulk job info (`+0000`, milliseconds).
pub fn stamp(t: DateTime<Utc>) -> String {
    super::store::format_datetime(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_750_with_checksum() {
        let jobs = Jobs::default();
        let id = jobs.next_id();
        assert!(id.starts_with("750"));
        assert_eq!(super::super::ids::normalize(&id[..15]).as_deref(), Some(id.as_str()));
    }

    #[test]
    fn uploads_are_recognised() {
        let seg = |s: &str| s.split('/').map(String::from).collect::<Vec<_>>();
        assert!(is_upload(&Method::PUT, &seg("jobs/ingest/750x/batches")));
        assert!(!is_upload(&Method::GET, &seg("jobs/ingest/750x/batches")));
        assert!(!is_upload(&Method::PUT, &seg("sobjects/Account")));
    }
}
