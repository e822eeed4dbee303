//! Query jobs as a stream of typed rows: create the job, wait for it, then read result pages
//! (`maxRecords` per page, following `Sforce-Locator` until it is the literal `null`), each
//! streamed to a temporary file and read row by row, so memory stays flat in the row count.
//!
//! Rows are decoded with the CSV header as field names: a parent field is the column
//! `Account.Name` (use `#[serde(rename = "Account.Name")]`), an empty cell is `None` for an
//! `Option` field, and numbers and booleans are parsed from their text.

use futures_util::stream::{self, Stream};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::job::Kind;
use super::{ColumnDelimiter, JobInfo, JobState, LineEnding, PollPolicy};
use crate::Client;
use crate::error::{Error, RequestContext, Result};
use crate::transport::{ApiRequest, Target};

/// How to run a query job.
#[derive(Debug, Clone, Default)]
pub struct BulkQueryOptions {
    /// `queryAll`: include deleted and archived rows.
    pub include_deleted: bool,
    /// `maxRecords` per result page; `None` lets Salesforce choose.
    pub max_records_per_page: Option<u32>,
    /// How to wait for the job.
    pub poll: PollPolicy,
    /// CSV delimiter of the results.
    pub delimiter: ColumnDelimiter,
    /// CSV line ending of the results.
    pub line_ending: LineEnding,
}

enum State {
    Start(String),
    Fetch {
        job: JobInfo,
        locator: Option<String>,
    },
    Page {
        job: JobInfo,
        reader: csv::Reader<std::fs::File>,
        header: csv::StringRecord,
        next: Option<String>,
        row: u64,
        _file: tempfile::NamedTempFile,
    },
    Done,
}

impl Client {
    /// `POST /jobs/query`: starts a query job.
    ///
    /// # Errors
    /// `MALFORMED_QUERY`, `INVALID_FIELD`… for a bad query (checked when the job is created),
    /// `API_ERROR` for what Bulk queries cannot do (aggregates); request-level failures.
    pub async fn create_query_job(&self, soql: &str, options: &BulkQueryOptions) -> Result<JobInfo> {
        let path = self.data_path("jobs/query");
        let ctx = RequestContext::new(Method::POST, &path);
        let body = json!({
            "operation": if options.include_deleted { "queryAll" } else { "query" },
            "query": soql,
            "contentType": "CSV",
            "columnDelimiter": options.delimiter,
            "lineEnding": options.line_ending,
        });
        // A lost answer leaves at most an extra query job, which reads nothing we keep.
        let request = ApiRequest::new(Method::POST, Target::Path(path), ctx).idempotent(true).json(&body)?;
        self.transport().send_json(request).await
    }

    /// Runs `soql` as a Bulk query job and streams its rows as `T`. API calls: create, one per
    /// poll, one per result page.
    ///
    /// The stream ends after the last page, or after the first error ([`Error::BulkJob`] when
    /// the job fails).
    pub fn bulk_query<T>(
        &self,
        soql: impl Into<String>,
        options: BulkQueryOptions,
    ) -> impl Stream<Item = Result<T>> + Send + 'static
    where
        T: DeserializeOwned + Send + 'static,
    {
        let client = self.clone();
        stream::try_unfold(State::Start(soql.into()), move |state| {
            let client = client.clone();
            let options = options.clone();
            async move { client.query_step(state, &options).await }
        })
    }

    async fn query_step<T: DeserializeOwned>(
        &self,
        mut state: State,
        options: &BulkQueryOptions,
    ) -> Result<Option<(T, State)>> {
        loop {
            state = match state {
                State::Done => return Ok(None),
                State::Start(soql) => {
                    let created = self.create_query_job(&soql, options).await?;
                    let job = self.wait_for_job(&created.id, true, &options.poll, 0).await?;
                    if job.state != JobState::JobComplete {
                        return Err(Error::BulkJob {
                            job_id: job.id.clone(),
                            state: job.state.as_str().to_owned(),
                            message: job.error_message.clone().unwrap_or_default(),
                        });
                    }
                    State::Fetch { job, locator: None }
                }
                State::Fetch { job, locator } => {
                    let mut query = Vec::new();
                    if let Some(l) = &locator {
                        query.push(("locator", l.clone()));
                    }
                    if let Some(n) = options.max_records_per_page {
                        query.push(("maxRecords", n.to_string()));
                    }
                    let path = self.job_path(Kind::Query, &job.id, "results");
                    let (file, headers) = self.download_with_headers(path.clone(), query).await?;
                    let next = headers
                        .get("sforce-locator")
                        .and_then(|v| v.to_str().ok())
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && *l != "null")
                        .map(str::to_owned);
                    let mut reader = csv::ReaderBuilder::new()
                        .has_headers(true)
                        .delimiter(job.column_delimiter.byte())
                        .from_path(file.path())
                        .map_err(|e| Error::Spool(e.into()))?;
                    let header = reader.headers().map_err(|e| Error::Spool(e.into()))?.clone();
                    State::Page { job, reader, header, next, row: 0, _file: file }
                }
                State::Page { job, mut reader, header, next, row, _file } => {
                    let mut record = csv::StringRecord::new();
                    let more = reader.read_record(&mut record).map_err(|e| Error::Spool(e.into()))?;
                    if more {
                        let value: T = record.deserialize(Some(&header)).map_err(|e| Error::Protocol {
                            context: RequestContext::new(Method::GET, self.job_path(Kind::Query, &job.id, "results")),
                            reason: format!("result row {row} does not decode: {e}"),
                        })?;
                        return Ok(Some((value, State::Page { job, reader, header, next, row: row + 1, _file })));
                    }
                    match next {
                        Some(locator) => State::Fetch { job, locator: Some(locator) },
                        None => State::Done,
                    }
                }
            };
        }
    }
}
