//! The job resources: create, upload, close, abort, delete, info, and polling until a job is
//! done. Each method is one API call, except [`Client::wait_for_job`].

use std::path::Path;
use std::time::Instant;

use reqwest::Method;
use reqwest::header::HeaderValue;
use serde_json::json;

use super::{IngestOptions, JobInfo, Operation, PollPolicy};
use crate::Client;
use crate::error::{Error, RequestContext, Result};
use crate::rest::{check_field, check_object};
use crate::transport::{ApiRequest, Target};

/// Which job family a job belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Ingest,
    Query,
}

impl Kind {
    fn segment(self) -> &'static str {
        match self {
            Self::Ingest => "jobs/ingest",
            Self::Query => "jobs/query",
        }
    }
}

/// Job IDs go into URLs: only plain IDs are accepted.
fn check_job_id(id: &str) -> Result<()> {
    if !id.is_empty() && id.len() <= 18 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!("{id:?} is not a Bulk job ID")))
    }
}

impl Client {
    pub(crate) fn job_path(&self, kind: Kind, id: &str, tail: &str) -> String {
        let base = self.data_path(&format!("{}/{id}", kind.segment()));
        if tail.is_empty() { base } else { format!("{base}/{tail}") }
    }

    /// `POST /jobs/ingest`: creates an ingest job in state `Open`.
    ///
    /// Sent as idempotent: if the answer is lost, re-creating leaves at most one extra empty
    /// `Open` job, which writes nothing and expires.
    ///
    /// # Errors
    /// `INVALIDJOB` / `API_ERROR` for a bad object, operation or external ID field, and the
    /// usual request-level failures.
    pub async fn create_ingest_job(&self, options: &IngestOptions) -> Result<JobInfo> {
        check_object(&options.object)?;
        let mut body = json!({
            "object": options.object,
            "operation": options.operation,
            "contentType": "CSV",
            "columnDelimiter": options.delimiter,
            "lineEnding": options.line_ending,
        });
        if options.operation == Operation::Upsert {
            let Some(field) = &options.external_id_field else {
                return Err(Error::InvalidInput("an upsert needs external_id_field".into()));
            };
            check_field(field)?;
            body["externalIdFieldName"] = json!(field);
        }
        let path = self.data_path("jobs/ingest");
        let ctx = RequestContext::new(Method::POST, &path).object(&options.object);
        let request = ApiRequest::new(Method::POST, Target::Path(path), ctx).idempotent(true).json(&body)?;
        self.transport().send_json(request).await
    }

    /// `PUT /jobs/ingest/{id}/batches`: uploads the job's CSV, streamed from `csv_file`.
    ///
    /// Not re-sent after a failure that may have reached Salesforce: a second upload to the
    /// same job makes the job unusable ("Found multipe contents"), so the caller starts a new
    /// job instead.
    ///
    /// # Errors
    /// Request-level failures; [`Error::Spool`]-like `InvalidInput` when the file is unreadable.
    pub async fn upload_ingest_data(&self, job_id: &str, csv_file: &Path) -> Result<()> {
        check_job_id(job_id)?;
        let path = self.job_path(Kind::Ingest, job_id, "batches");
        let ctx = RequestContext::new(Method::PUT, &path);
        let request = ApiRequest::new(Method::PUT, Target::Path(path), ctx)
            .file_body(csv_file.to_path_buf(), HeaderValue::from_static("text/csv"))
            .idempotent(false);
        self.transport().send(request).await.map(|_| ())
    }

    async fn set_state(&self, kind: Kind, job_id: &str, state: &str) -> Result<JobInfo> {
        check_job_id(job_id)?;
        let path = self.job_path(kind, job_id, "");
        let ctx = RequestContext::new(Method::PATCH, &path);
        let request = ApiRequest::new(Method::PATCH, Target::Path(path), ctx).json(&json!({"state": state}))?;
        self.transport().send_json(request).await
    }

    /// `PATCH {"state":"UploadComplete"}`: closes the job so Salesforce processes it.
    ///
    /// # Errors
    /// `INVALIDJOB` when more than one upload reached the job; request-level failures.
    pub async fn close_ingest_job(&self, job_id: &str) -> Result<JobInfo> {
        self.set_state(Kind::Ingest, job_id, "UploadComplete").await
    }

    /// `PATCH {"state":"Aborted"}` on an ingest job.
    ///
    /// # Errors
    /// `INVALIDJOBSTATE` when the job already finished; request-level failures.
    pub async fn abort_ingest_job(&self, job_id: &str) -> Result<JobInfo> {
        self.set_state(Kind::Ingest, job_id, "Aborted").await
    }

    /// `PATCH {"state":"Aborted"}` on a query job.
    ///
    /// # Errors
    /// As [`Client::abort_ingest_job`].
    pub async fn abort_query_job(&self, job_id: &str) -> Result<JobInfo> {
        self.set_state(Kind::Query, job_id, "Aborted").await
    }

    /// `DELETE /jobs/ingest/{id}` (or a query job with `query = true`).
    ///
    /// # Errors
    /// `INVALIDJOBSTATE` for a job still open or running; `NOT_FOUND`.
    pub async fn delete_bulk_job(&self, job_id: &str, query: bool) -> Result<()> {
        check_job_id(job_id)?;
        let kind = if query { Kind::Query } else { Kind::Ingest };
        let path = self.job_path(kind, job_id, "");
        let ctx = RequestContext::new(Method::DELETE, &path);
        self.transport().send(ApiRequest::new(Method::DELETE, Target::Path(path), ctx)).await.map(|_| ())
    }

    /// `GET /jobs/ingest/{id}`: the job's state and counters.
    ///
    /// # Errors
    /// `NOT_FOUND` for an unknown job; request-level failures.
    pub async fn ingest_job_info(&self, job_id: &str) -> Result<JobInfo> {
        self.job_info(Kind::Ingest, job_id).await
    }

    /// `GET /jobs/query/{id}`.
    ///
    /// # Errors
    /// As [`Client::ingest_job_info`].
    pub async fn query_job_info(&self, job_id: &str) -> Result<JobInfo> {
        self.job_info(Kind::Query, job_id).await
    }

    pub(crate) async fn job_info(&self, kind: Kind, job_id: &str) -> Result<JobInfo> {
        check_job_id(job_id)?;
        let path = self.job_path(kind, job_id, "");
        let ctx = RequestContext::new(Method::GET, &path);
        self.transport().send_json(ApiRequest::new(Method::GET, Target::Path(path), ctx)).await
    }

    /// Polls a job until it is `JobComplete`, `Failed` or `Aborted`, sleeping (real time)
    /// between polls as `poll` says; `records` (the rows uploaded, if known) stretches the
    /// first wait and, once a poll shows some processed, times the next by the rate so far.
    /// Returns the final info, whatever the final state.
    ///
    /// # Errors
    /// Request-level failures of a poll, or [`Error::InvalidInput`] when `poll.timeout` passes
    /// first (the job keeps running).
    pub async fn wait_for_job(&self, job_id: &str, query: bool, poll: &PollPolicy, records: u64) -> Result<JobInfo> {
        self.wait_for_job_with(job_id, query, poll, records, &|_| {}).await
    }

    /// [`Client::wait_for_job`], showing `on_poll` every status read (the last one too).
    ///
    /// # Errors
    /// As [`Client::wait_for_job`].
    pub async fn wait_for_job_with(
        &self,
        job_id: &str,
        query: bool,
        poll: &PollPolicy,
        records: u64,
        on_poll: &(dyn Fn(&JobInfo) + Sync),
    ) -> Result<JobInfo> {
        let kind = if query { Kind::Query } else { Kind::Ingest };
        let started = Instant::now();
        let mut n = 0;
        let mut processed = 0;
        loop {
            let delay = poll.delay_after(n, records, processed, started.elapsed());
            if started.elapsed() + delay > poll.timeout {
                return Err(Error::InvalidInput(format!(
                    "Bulk job {job_id} did not finish within {:?}; it keeps running and can be resumed",
                    poll.timeout
                )));
            }
            tokio::time::sleep(delay).await;
            let info = self.job_info(kind, job_id).await?;
            on_poll(&info);
            if info.state.is_terminal() {
                return Ok(info);
            }
            tracing::debug!(job = %job_id, state = info.state.as_str(), processed = info.number_records_processed, "Bulk job still running.");
            processed = info.number_records_processed;
            n += 1;
        }
    }
}
