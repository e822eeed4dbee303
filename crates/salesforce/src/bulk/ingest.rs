//! The ingest flow: spool → create → upload → close → poll → results, one job per spool file,
//! and reading a job's results back as [`RowOutcome`]s.
//!
//! API calls per job: create, upload, close, one per poll, then only the result files that can
//! hold rows (`successfulResults` unless every row failed, `failedResults` only when
//! `numberRecordsFailed > 0`, `unprocessedrecords` only when the job stopped early).
//!
//! An update or delete job that completed with every row processed and none failed reads no
//! result file at all: each row names its record by `Id`, so its successful result would only
//! echo the spooled input back, and the outcomes are read from the spool instead (one call
//! fewer per job, the scarce resource; inserts and upserts still read theirs for the new Ids).

use reqwest::Method;
use reqwest::header::{ACCEPT, HeaderValue};
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use super::job::Kind;
use super::spool::{Fingerprints, SpoolFile, Spooler, fingerprint};
use super::{
    IngestOptions, IngestReport, IngestSummary, JobInfo, JobState, LineEnding, Operation, PollPolicy, RowOutcome,
    RowStatus, parse_bulk_error,
};
use crate::Client;
use crate::error::{Error, RequestContext, Result};
use crate::ids::SalesforceId;
use crate::rest::check_object;
use crate::transport::{ApiRequest, Target};

/// The three result files of an ingest job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResultKind {
    Successful,
    Failed,
    Unprocessed,
    /// The spooled input of a job whose every row succeeded and names its record by `Id`.
    Input,
}

impl ResultKind {
    fn path(self) -> &'static str {
        match self {
            Self::Successful => "successfulResults",
            Self::Failed => "failedResults",
            Self::Unprocessed => "unprocessedrecords",
            Self::Input => "",
        }
    }

    /// Leading `sf__` columns before the echoed input.
    fn prefix(self) -> usize {
        match self {
            Self::Successful | Self::Failed => 2,
            Self::Unprocessed | Self::Input => 0,
        }
    }
}

/// Whether a finished job's successful results would only repeat its input: an operation whose
/// rows carry their record's `Id`, completed, every row processed and none failed.
fn results_repeat_input(operation: Operation, info: &JobInfo, rows: u64) -> bool {
    matches!(operation, Operation::Update | Operation::Delete | Operation::HardDelete)
        && info.state == JobState::JobComplete
        && info.number_records_failed == 0
        && info.number_records_processed == rows
}

impl Client {
    /// Loads `records` through Bulk API 2.0 and returns every row's outcome, in input order.
    ///
    /// Outcomes are kept in memory; for very large inputs use [`Client::bulk_ingest_with`].
    ///
    /// # Errors
    /// As [`Client::bulk_ingest_with`].
    pub async fn bulk_ingest<I, T>(&self, options: &IngestOptions, records: I) -> Result<IngestReport>
    where
        I: IntoIterator<Item = T>,
        T: Serialize,
    {
        let mut outcomes = Vec::new();
        let summary = self.bulk_ingest_with(options, records, |o| outcomes.push(o)).await?;
        outcomes.sort_by_key(|o| o.index);
        Ok(IngestReport { summary, outcomes })
    }

    /// Loads `records` through Bulk API 2.0, one job per [`IngestOptions::max_job_bytes`] of
    /// CSV, handing each row's outcome to `on_outcome` as results are read (in no particular
    /// order; [`RowOutcome::index`] says which input row it is). Memory stays flat in the
    /// number of records, apart from one fingerprint per row of the current job.
    ///
    /// A job that fails or is aborted as a whole does not make this fail: its rows come back
    /// as processed or [`RowStatus::Unprocessed`], and its final info is in the summary.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for records that cannot become CSV rows; request-level failures
    /// of the job calls (after the client's retries; an upload that may have reached
    /// Salesforce is not re-sent to the same job but to a new one); [`Error::Spool`].
    pub async fn bulk_ingest_with<I, T, F>(
        &self,
        options: &IngestOptions,
        records: I,
        on_outcome: F,
    ) -> Result<IngestSummary>
    where
        I: IntoIterator<Item = T>,
        T: Serialize,
        F: FnMut(RowOutcome) + Send,
    {
        self.bulk_ingest_progress(options, records, on_outcome, &|_| {}).await
    }

    /// [`Client::bulk_ingest_with`], telling `on_progress` after each status poll how many
    /// rows Salesforce has processed so far (`numberRecordsProcessed`, summed over the jobs
    /// before), so a long job is not a silent wait.
    ///
    /// # Errors
    /// As [`Client::bulk_ingest_with`].
    pub async fn bulk_ingest_progress<I, T, F>(
        &self,
        options: &IngestOptions,
        records: I,
        mut on_outcome: F,
        on_progress: &(dyn Fn(u64) + Sync),
    ) -> Result<IngestSummary>
    where
        I: IntoIterator<Item = T>,
        T: Serialize,
        F: FnMut(RowOutcome) + Send,
    {
        check_object(&options.object)?;
        if options.max_job_bytes == 0 || options.max_job_bytes > super::BULK_MAX_UPLOAD_BYTES {
            return Err(Error::InvalidInput(format!(
                "max_job_bytes must be between 1 and {}",
                super::BULK_MAX_UPLOAD_BYTES
            )));
        }
        let mut spooler =
            Spooler::new(options.columns.clone(), options.delimiter, options.line_ending, options.max_job_bytes);
        let mut input = records.into_iter();
        let mut summary = IngestSummary::default();
        while let Some(spool) = spooler.fill(&mut input)? {
            let job = self.submit(options, &spool).await?;
            tracing::info!(
                job = %job.id,
                object = %options.object,
                first_row = spool.first_index,
                rows = spool.rows,
                "Bulk ingest job submitted."
            );
            let before: u64 = summary.jobs.iter().map(|j| j.number_records_processed).sum();
            let info = self
                .wait_for_job_with(&job.id, false, &options.poll, spool.rows, &|i: &JobInfo| {
                    on_progress(before + i.number_records_processed);
                })
                .await?;
            let SpoolFile { file, fingerprints, rows, .. } = spool;
            if results_repeat_input(options.operation, &info, rows) {
                let reader = csv_reader(&info, file.path())?;
                let mut fingerprints = fingerprints;
                report_rows(reader, ResultKind::Input, &info, Some(&mut fingerprints), &mut summary, &mut on_outcome)?;
                for index in fingerprints.remaining() {
                    tracing::warn!(job = %info.id, index, "A spooled row was not read back.");
                    summary.unmatched += 1;
                }
            } else {
                self.read_ingest_results(&info, Some(fingerprints), &mut summary, &mut on_outcome).await?;
            }
            summary.jobs.push(info);
        }
        summary.rows = spooler.rows_read();
        debug_assert_eq!(spooler.delimiter(), options.delimiter);
        debug_assert_eq!(spooler.line_ending(), options.line_ending);
        Ok(summary)
    }

    /// Waits for an ingest job created earlier (by this or another process: the id is enough)
    /// and reads its results. Outcomes carry no input position, only the echoed input columns.
    ///
    /// # Errors
    /// Request-level failures; `NOT_FOUND` for an unknown job.
    pub async fn resume_ingest_job<F>(
        &self,
        job_id: &str,
        poll: &PollPolicy,
        mut on_outcome: F,
    ) -> Result<IngestSummary>
    where
        F: FnMut(RowOutcome) + Send,
    {
        let info = self.wait_for_job(job_id, false, poll, 0).await?;
        let mut summary = IngestSummary::default();
        self.read_ingest_results(&info, None, &mut summary, &mut on_outcome).await?;
        summary.rows = summary.succeeded + summary.failed + summary.unprocessed;
        summary.jobs.push(info);
        Ok(summary)
    }

    /// Create, upload, close. An upload or close that fails in a retryable way is not
    /// repeated on the same job (a second upload would spoil it): the job is aborted and the
    /// file goes to a new one, up to the retry policy's attempts.
    async fn submit(&self, options: &IngestOptions, spool: &SpoolFile) -> Result<JobInfo> {
        let attempts = self.config().retry.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let job = self.create_ingest_job(options).await?;
            let sent = match self.upload_ingest_data(&job.id, spool.file.path()).await {
                Ok(()) => self.close_ingest_job(&job.id).await,
                Err(e) => Err(e),
            };
            match sent {
                Ok(closed) => return Ok(closed),
                Err(error) => {
                    if let Err(abort) = self.abort_ingest_job(&job.id).await {
                        tracing::warn!(job = %job.id, error = %abort, "Could not abort a Bulk job whose upload failed.");
                    }
                    if !error.is_retryable() || attempt >= attempts {
                        return Err(error);
                    }
                    tracing::warn!(job = %job.id, %error, attempt, "Bulk upload failed; sending the data to a new job.");
                }
            }
        }
    }

    /// Reads the result files a finished job can have rows in and reports each row.
    async fn read_ingest_results(
        &self,
        info: &JobInfo,
        mut fingerprints: Option<Fingerprints>,
        summary: &mut IngestSummary,
        on_outcome: &mut (dyn FnMut(RowOutcome) + Send),
    ) -> Result<()> {
        let processed = info.number_records_processed;
        let failed = info.number_records_failed;
        let mut kinds = Vec::with_capacity(3);
        if processed > failed {
            kinds.push(ResultKind::Successful);
        }
        if failed > 0 {
            kinds.push(ResultKind::Failed);
        }
        let stopped_early = info.state != JobState::JobComplete;
        if stopped_early {
            kinds.push(ResultKind::Unprocessed);
        }
        for kind in kinds {
            let file = self.download(self.job_path(Kind::Ingest, &info.id, kind.path())).await?;
            let reader = csv_reader(info, file.path())?;
            report_rows(reader, kind, info, fingerprints.as_mut(), summary, on_outcome)?;
        }
        if let Some(left) = fingerprints.map(Fingerprints::remaining) {
            for index in left {
                if stopped_early {
                    summary.unprocessed += 1;
                    on_outcome(RowOutcome {
                        index: Some(index),
                        job_id: info.id.clone(),
                        id: None,
                        status: RowStatus::Unprocessed,
                        input: Vec::new(),
                    });
                } else {
                    tracing::warn!(job = %info.id, index, "No Bulk result matched an input row.");
                    summary.unmatched += 1;
                }
            }
        }
        Ok(())
    }

    /// GETs a CSV resource into a temporary file, streaming (result files can be large).
    pub(crate) async fn download(&self, path: String) -> Result<tempfile::NamedTempFile> {
        Ok(self.download_with_headers(path, Vec::new()).await?.0)
    }

    pub(crate) async fn download_with_headers(
        &self,
        path: String,
        query: Vec<(&'static str, String)>,
    ) -> Result<(tempfile::NamedTempFile, reqwest::header::HeaderMap)> {
        let ctx = RequestContext::new(Method::GET, &path);
        let mut request = ApiRequest::new(Method::GET, Target::Path(path), ctx.clone())
            .header(ACCEPT, HeaderValue::from_static("text/csv"));
        for (k, v) in query {
            request = request.query(k, v);
        }
        let mut response = self.transport().send_streaming(request).await?;
        let headers = response.headers().clone();
        let file = tempfile::NamedTempFile::new().map_err(Error::Spool)?;
        let mut out = tokio::fs::File::from_std(file.reopen().map_err(Error::Spool)?);
        loop {
            let chunk = response.chunk().await.map_err(|source| Error::Transport {
                context: ctx.clone(),
                may_have_reached_server: true,
                source,
            })?;
            let Some(chunk) = chunk else { break };
            out.write_all(&chunk).await.map_err(Error::Spool)?;
        }
        out.flush().await.map_err(Error::Spool)?;
        Ok((file, headers))
    }
}

/// A reader of a job's CSV (a result file or its spooled input) in the job's dialect.
fn csv_reader(info: &JobInfo, path: &std::path::Path) -> Result<csv::Reader<std::fs::File>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(info.column_delimiter.byte())
        .terminator(match info.line_ending {
            LineEnding::Lf => csv::Terminator::Any(b'\n'),
            LineEnding::Crlf => csv::Terminator::CRLF,
        })
        .from_path(path)
        .map_err(|e| Error::Spool(e.into()))
}

fn report_rows(
    mut reader: csv::Reader<std::fs::File>,
    kind: ResultKind,
    info: &JobInfo,
    mut fingerprints: Option<&mut Fingerprints>,
    summary: &mut IngestSummary,
    on_outcome: &mut (dyn FnMut(RowOutcome) + Send),
) -> Result<()> {
    let mut rows = reader.byte_records();
    let header: Vec<String> = match rows.next() {
        Some(h) => {
            h.map_err(|e| Error::Spool(e.into()))?.iter().map(|c| String::from_utf8_lossy(c).into_owned()).collect()
        }
        None => return Ok(()),
    };
    let prefix = kind.prefix();
    let input_columns = header.get(prefix..).unwrap_or(&[]);
    let id_column = header.iter().position(|c| c.eq_ignore_ascii_case("Id"));
    for row in rows {
        let row = row.map_err(|e| Error::Spool(e.into()))?;
        let cells: Vec<&[u8]> = (prefix..header.len()).map(|i| row.get(i).unwrap_or(b"")).collect();
        let index = fingerprints.as_deref_mut().and_then(|f| f.take(fingerprint(cells.iter().copied())));
        if fingerprints.is_some() && index.is_none() {
            summary.unmatched += 1;
        }
        let text = |i: usize| String::from_utf8_lossy(row.get(i).unwrap_or(b"")).into_owned();
        let id = match kind {
            ResultKind::Unprocessed => None,
            ResultKind::Input => id_column.and_then(|i| SalesforceId::parse(&text(i)).ok()),
            _ => SalesforceId::parse(&text(0)).ok(),
        };
        let status = match kind {
            ResultKind::Input => {
                summary.succeeded += 1;
                RowStatus::Success { created: false }
            }
            ResultKind::Successful => {
                summary.succeeded += 1;
                RowStatus::Success { created: text(1).eq_ignore_ascii_case("true") }
            }
            ResultKind::Failed => {
                summary.failed += 1;
                RowStatus::Failed(parse_bulk_error(&text(1)))
            }
            ResultKind::Unprocessed => {
                summary.unprocessed += 1;
                RowStatus::Unprocessed
            }
        };
        let input = input_columns
            .iter()
            .zip(&cells)
            .map(|(name, value)| (name.clone(), String::from_utf8_lossy(value).into_owned()))
            .collect();
        on_outcome(RowOutcome { index, job_id: info.id.clone(), id, status, input });
    }
    Ok(())
}
