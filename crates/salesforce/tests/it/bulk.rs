//! Bulk API 2.0 through the client against the emulator: every ingest operation, per-row
//! outcomes matched to input rows, job splitting, failures and faults, resuming a job by id,
//! and query jobs as typed streams with locator paging.

use std::time::Duration;

use futures_util::TryStreamExt;
use salesforce::{
    BulkOperation, BulkQueryOptions, ColumnDelimiter, ErrorCode, IngestOptions, JobState, LineEnding, PollPolicy,
    RowStatus,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::support::Org;

fn fast_poll() -> PollPolicy {
    PollPolicy {
        initial: Duration::from_millis(5),
        per_record: Duration::ZERO,
        factor: 2.0,
        max: Duration::from_millis(50),
        timeout: Duration::from_secs(60),
    }
}

fn upsert() -> IngestOptions {
    IngestOptions { poll: fast_poll(), ..IngestOptions::upsert("Account", "Pendo_Account_Id__c") }
}

fn options(object: &str, op: BulkOperation) -> IngestOptions {
    IngestOptions { poll: fast_poll(), ..IngestOptions::new(object, op) }
}

#[derive(Serialize)]
struct AccountRow {
    #[serde(rename = "Pendo_Account_Id__c")]
    key: String,
    #[serde(rename = "Name", skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(rename = "Pendo_Events__c")]
    events: Option<f64>,
}

#[tokio::test]
async fn upsert_reports_every_row_in_input_order() {
    let org = Org::start().await;
    let existing = org.seed("Account", json!([{"Name": "Old", "Pendo_Account_Id__c": "k-1"}])).await;
    let client = org.client();
    let rows = vec![
        AccountRow { key: "k-1".into(), name: Some("Renamed".into()), events: Some(3.0) },
        AccountRow { key: "k-2".into(), name: Some("New, \"quoted\"\nline".into()), events: None },
        // No Name: a new record without its required field fails.
        AccountRow { key: "k-3".into(), name: None, events: Some(1.0) },
        AccountRow { key: "k-4".into(), name: Some("x".repeat(300)), events: None },
    ];
    let report = client.bulk_ingest(&upsert(), rows).await.unwrap();
    let s = &report.summary;
    assert_eq!((s.rows, s.succeeded, s.failed, s.unprocessed, s.unmatched), (4, 2, 2, 0, 0));
    assert_eq!(s.jobs.len(), 1);
    assert_eq!(s.jobs[0].state, JobState::JobComplete);
    let o = &report.outcomes;
    assert_eq!(o.iter().map(|o| o.index).collect::<Vec<_>>(), [Some(0), Some(1), Some(2), Some(3)]);
    assert_eq!(o[0].status, RowStatus::Success { created: false });
    assert_eq!(o[0].id.as_ref().unwrap().as_str(), existing[0]);
    assert_eq!(o[1].status, RowStatus::Success { created: true });
    match &o[2].status {
        RowStatus::Failed(e) => {
            assert_eq!(e.status_code, ErrorCode::RequiredFieldMissing);
            assert_eq!(e.fields, vec!["Name"]);
            assert!(!e.retry_class().is_retryable());
        }
        other => panic!("{other:?}"),
    }
    assert!(o[2].id.is_none());
    assert!(matches!(&o[3].status, RowStatus::Failed(e) if e.status_code == ErrorCode::StringTooLong));
    assert_eq!(o[2].input_value("Pendo_Account_Id__c"), Some("k-3"));

    let stored = org.dump("Account").await;
    let k2 = stored.iter().find(|r| r["Pendo_Account_Id__c"] == "k-2").unwrap();
    assert_eq!(k2["Name"], "New, \"quoted\"\nline");
    assert_eq!(k2["Pendo_Events__c"], Value::Null);
    let k1 = stored.iter().find(|r| r["Pendo_Account_Id__c"] == "k-1").unwrap();
    assert_eq!((k1["Name"].as_str(), k1["Pendo_Events__c"].as_f64()), (Some("Renamed"), Some(3.0)));
}

#[tokio::test]
async fn one_job_costs_a_handful_of_api_calls() {
    let org = Org::start().await;
    let client = org.client();
    client.instance_url().await.unwrap();
    let before = org.api_calls().await;
    let rows = (0..2_000).map(|i| json!({"Pendo_Account_Id__c": format!("c-{i}"), "Name": format!("C {i}")}));
    let report = client.bulk_ingest(&upsert(), rows).await.unwrap();
    assert_eq!(report.summary.succeeded, 2_000);
    let calls = org.api_calls().await - before;
    // create, upload, close, poll(s), successfulResults; no failedResults (none failed).
    assert!((5..=8).contains(&calls), "{calls} calls");
}

#[tokio::test]
async fn insert_update_delete_and_hard_delete() {
    let org = Org::start().await;
    org.seed("Account", json!([{"Name": "Parent", "Pendo_Account_Id__c": "p-1"}])).await;
    let client = org.client();
    // Insert contacts with a relationship column resolved by the parent's external ID.
    let contacts = (0..3).map(|i| {
        json!({"LastName": format!("L{i}"), "Email": format!("l{i}@x.test"), "Account": {"Pendo_Account_Id__c": "p-1"}})
    });
    let report = client.bulk_ingest(&options("Contact", BulkOperation::Insert), contacts).await.unwrap();
    assert_eq!(report.summary.succeeded, 3, "{:?}", report.outcomes);
    assert!(report.outcomes.iter().all(|o| o.status == RowStatus::Success { created: true }));
    let ids: Vec<String> = report.outcomes.iter().map(|o| o.id.clone().unwrap().into_string()).collect();
    let stored = org.dump("Contact").await;
    assert!(stored.iter().all(|c| c["AccountId"].as_str().is_some_and(|a| a.starts_with("001"))));

    // Update: null clears (#N/A), a missing field stays as it was.
    let updates = vec![json!({"Id": ids[0], "Email": null}), json!({"Id": ids[1], "LastName": "Changed"})];
    let opts = IngestOptions {
        columns: Some(vec!["Id".into(), "Email".into(), "LastName".into()]),
        ..options("Contact", BulkOperation::Update)
    };
    let report = client.bulk_ingest(&opts, updates).await.unwrap();
    assert_eq!(report.summary.succeeded, 2, "{:?}", report.outcomes);
    let stored = org.dump("Contact").await;
    let c0 = stored.iter().find(|c| c["Id"] == ids[0]).unwrap();
    assert_eq!((c0["Email"].clone(), c0["LastName"].as_str()), (Value::Null, Some("L0")));
    let c1 = stored.iter().find(|c| c["Id"] == ids[1]).unwrap();
    assert_eq!((c1["Email"].as_str(), c1["LastName"].as_str()), (Some("l1@x.test"), Some("Changed")));

    let report = client.bulk_ingest(&options("Contact", BulkOperation::Delete), [json!({"Id": ids[0]})]).await.unwrap();
    assert_eq!(report.outcomes[0].status, RowStatus::Success { created: false });
    let report =
        client.bulk_ingest(&options("Contact", BulkOperation::HardDelete), [json!({"Id": ids[1]})]).await.unwrap();
    assert_eq!(report.summary.succeeded, 1);
    // Deleting again: the soft-deleted one is ENTITY_IS_DELETED, the hard-deleted one is gone.
    let again = vec![json!({"Id": ids[0]}), json!({"Id": ids[1]})];
    let report = client.bulk_ingest(&options("Contact", BulkOperation::Delete), again).await.unwrap();
    assert_eq!(report.summary.failed, 2);
    assert!(matches!(&report.outcomes[0].status, RowStatus::Failed(e) if e.status_code == ErrorCode::EntityIsDeleted));
    assert!(matches!(&report.outcomes[1].status, RowStatus::Failed(e) if e.status_code == ErrorCode::NotFound));
    assert_eq!(org.dump("Contact").await.len(), 2);
}

#[tokio::test]
async fn large_inputs_split_into_jobs_and_identical_rows_match_once_each() {
    let org = Org::start().await;
    let client = org.client();
    let opts = IngestOptions { max_job_bytes: 2_000, ..options("Account", BulkOperation::Insert) };
    let mut outcomes = Vec::new();
    // 1,000 rows of ~10 bytes, each value twice: several jobs, duplicate rows in each.
    let rows = (0..1_000).map(|i| json!({"Name": format!("Dup {}", i / 2)}));
    let summary = client.bulk_ingest_with(&opts, rows, |o| outcomes.push(o)).await.unwrap();
    assert!(summary.jobs.len() >= 3, "{} jobs", summary.jobs.len());
    assert_eq!((summary.rows, summary.succeeded, summary.unmatched), (1_000, 1_000, 0));
    let mut indexes: Vec<u64> = outcomes.iter().map(|o| o.index.unwrap()).collect();
    indexes.sort_unstable();
    assert_eq!(indexes, (0..1_000).collect::<Vec<_>>());
    assert_eq!(org.dump("Account").await.len(), 1_000);
}

#[tokio::test]
async fn progress_follows_the_processed_count_across_jobs() {
    let org = Org::start().await;
    let client = org.client();
    let opts = IngestOptions { max_job_bytes: 2_000, ..options("Account", BulkOperation::Insert) };
    let seen = std::sync::Mutex::new(Vec::new());
    let rows = (0..600).map(|i| json!({"Name": format!("Acme {i}")}));
    let summary = client.bulk_ingest_progress(&opts, rows, |_| {}, &|n| seen.lock().unwrap().push(n)).await.unwrap();
    assert!(summary.jobs.len() >= 2, "{} jobs", summary.jobs.len());
    let seen = seen.into_inner().unwrap();
    // One report per status poll, at least one per job, never going back, ending at every row.
    assert!(seen.len() >= summary.jobs.len(), "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(seen.last(), Some(&600), "{seen:?}");
    // A later job's reports start from the rows of the jobs before it.
    let first_job = summary.jobs[0].number_records_processed;
    assert!(seen.iter().any(|n| *n > first_job), "{first_job} {seen:?}");
}

#[tokio::test]
async fn csv_options_round_trip() {
    let org = Org::start().await;
    let client = org.client();
    for (delimiter, line_ending) in [
        (ColumnDelimiter::Tab, LineEnding::Crlf),
        (ColumnDelimiter::Pipe, LineEnding::Lf),
        (ColumnDelimiter::Semicolon, LineEnding::Crlf),
        (ColumnDelimiter::Caret, LineEnding::Lf),
        (ColumnDelimiter::Backquote, LineEnding::Crlf),
    ] {
        let opts = IngestOptions { delimiter, line_ending, ..upsert() };
        let name = "a,b\tc|d;e^f`g \"h\"\r\ni";
        let key = format!("{delimiter:?}");
        let report = client.bulk_ingest(&opts, [json!({"Pendo_Account_Id__c": key, "Name": name})]).await.unwrap();
        assert_eq!(report.summary.succeeded, 1, "{delimiter:?}: {:?}", report.outcomes);
        assert_eq!(report.summary.unmatched, 0);
    }
    let stored = org.dump("Account").await;
    assert_eq!(stored.len(), 5);
    assert!(stored.iter().all(|r| r["Name"] == "a,b\tc|d;e^f`g \"h\"\r\ni"));
}

#[tokio::test]
async fn failed_jobs_leave_rows_unprocessed() {
    let org = Org::start().await;
    let client = org.client();
    // A column the object does not have fails the whole job.
    let report = client
        .bulk_ingest(&options("Account", BulkOperation::Insert), [json!({"Name": "A", "Nope__c": 1})])
        .await
        .unwrap();
    assert_eq!(report.summary.jobs[0].state, JobState::Failed);
    assert_eq!(report.summary.jobs[0].error_message.as_deref(), Some("InvalidBatch : Field name not found : Nope__c"));
    assert_eq!(report.summary.unprocessed, 1);
    assert_eq!(report.outcomes[0].status, RowStatus::Unprocessed);
    assert_eq!(report.outcomes[0].index, Some(0));

    // An internal failure after the first 10,000-row batch: the rest come back unprocessed.
    org.set_faults(json!({"bulkJobFailure": 1.0})).await;
    let rows = (0..12_000).map(|i| json!({"Name": format!("N{i}")}));
    let report = client.bulk_ingest(&options("Account", BulkOperation::Insert), rows).await.unwrap();
    let s = &report.summary;
    assert_eq!(s.jobs[0].state, JobState::Failed);
    assert_eq!((s.succeeded, s.unprocessed, s.unmatched), (10_000, 2_000, 0));
    let error = salesforce::Error::BulkJob {
        job_id: s.jobs[0].id.clone(),
        state: "Failed".into(),
        message: s.jobs[0].error_message.clone().unwrap(),
    };
    assert!(error.is_retryable());
}

#[tokio::test]
async fn lock_contention_is_a_retryable_row_failure() {
    let org = Org::start().await;
    org.set_faults(json!({"seed": 5, "bulkUnableToLockRow": 0.3})).await;
    let client = org.client();
    let rows = (0..300).map(|i| json!({"Pendo_Account_Id__c": format!("l-{i}"), "Name": "L"}));
    let report = client.bulk_ingest(&upsert(), rows).await.unwrap();
    let locked: Vec<_> = report
        .outcomes
        .iter()
        .filter(|o| matches!(&o.status, RowStatus::Failed(e) if e.status_code == ErrorCode::UnableToLockRow && e.retry_class().is_retryable()))
        .collect();
    assert!(locked.len() > 30 && locked.len() < 150, "{}", locked.len());
    assert_eq!(report.summary.failed as usize, locked.len());
    // Re-sending just the failed rows (the engine's job) succeeds once the contention clears.
    org.clear_faults().await;
    let retry =
        locked.iter().map(|o| json!({"Pendo_Account_Id__c": o.input_value("Pendo_Account_Id__c"), "Name": "L"}));
    let again = client.bulk_ingest(&upsert(), retry).await.unwrap();
    assert_eq!(again.summary.failed, 0);
    assert_eq!(org.dump("Account").await.len(), 300);
}

#[tokio::test]
async fn a_job_is_resumed_from_its_id() {
    let org = Org::start().await;
    org.set_faults(json!({"bulkProcessingDelayMs": 50})).await;
    let first = org.client();
    let job = first.create_ingest_job(&upsert()).await.unwrap();
    assert_eq!(job.state, JobState::Open);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("data.csv");
    std::fs::write(&csv, "Pendo_Account_Id__c,Name\nr-1,One\nr-2,\n").unwrap();
    first.upload_ingest_data(&job.id, &csv).await.unwrap();
    let closed = first.close_ingest_job(&job.id).await.unwrap();
    assert_eq!(closed.state, JobState::UploadComplete);
    drop(first);

    // "After a restart": a new client knows only the id.
    let second = org.client();
    let mut outcomes = Vec::new();
    let summary = second.resume_ingest_job(&job.id, &fast_poll(), |o| outcomes.push(o)).await.unwrap();
    assert_eq!((summary.succeeded, summary.failed), (1, 1));
    assert!(outcomes.iter().all(|o| o.index.is_none() && o.job_id == job.id));
    let failed = outcomes.iter().find(|o| matches!(o.status, RowStatus::Failed(_))).unwrap();
    assert_eq!(failed.input, vec![("Pendo_Account_Id__c".into(), "r-2".into()), ("Name".into(), String::new())]);
    let info = second.ingest_job_info(&job.id).await.unwrap();
    assert_eq!((info.number_records_processed, info.job_type.as_deref()), (2, Some("V2Ingest")));
    second.delete_bulk_job(&job.id, false).await.unwrap();
    let gone = second.ingest_job_info(&job.id).await.unwrap_err();
    assert_eq!(gone.error_code(), Some(&ErrorCode::NotFound));
}

#[tokio::test]
async fn job_level_errors_are_typed() {
    let org = Org::start().await;
    let client = org.client();
    let no_key = IngestOptions { external_id_field: None, ..upsert() };
    assert!(matches!(
        client.bulk_ingest(&no_key, [json!({"Name": "x"})]).await,
        Err(salesforce::Error::InvalidInput(_))
    ));
    let bad_key = IngestOptions { external_id_field: Some("Name".into()), ..upsert() };
    let err = client.bulk_ingest(&bad_key, [json!({"Name": "x"})]).await.unwrap_err();
    assert_eq!(err.error_code().map(ErrorCode::as_str), Some("INVALIDJOB"));
    assert!(!err.is_retryable());
    let err = client.bulk_ingest(&options("Nope__c", BulkOperation::Insert), [json!({"Name": "x"})]).await.unwrap_err();
    assert_eq!(err.error_code().map(ErrorCode::as_str), Some("INVALIDJOB"));
    // A later record with a field outside the header.
    let rows = vec![json!({"Name": "a"}), json!({"Name": "b", "Phone": "1"})];
    let err = client.bulk_ingest(&options("Account", BulkOperation::Insert), rows).await.unwrap_err();
    assert!(matches!(err, salesforce::Error::InvalidInput(ref m) if m.contains("Phone")), "{err}");
    let err =
        client.bulk_ingest(&options("Account", BulkOperation::Insert), [json!({"Name": ["array"]})]).await.unwrap_err();
    assert!(matches!(err, salesforce::Error::InvalidInput(_)));
    // The daily batch allocation spent.
    org.set_limits(json!({"DailyBulkApiBatches": {"Remaining": 0}})).await;
    let err = client.bulk_ingest(&options("Account", BulkOperation::Insert), [json!({"Name": "a"})]).await.unwrap_err();
    assert_eq!(err.error_code().map(ErrorCode::as_str), Some("EXCEEDED_QUOTA"));
}

#[derive(Debug, Deserialize, PartialEq)]
struct ContactRow {
    #[serde(rename = "LastName")]
    last_name: String,
    #[serde(rename = "Account.Name")]
    account: Option<String>,
    #[serde(rename = "NPS_Score__c")]
    nps: Option<f64>,
}

#[tokio::test]
async fn query_jobs_stream_typed_rows_across_pages() {
    let org = Org::start().await;
    let parent = org.seed("Account", json!([{"Name": "Acme, Inc"}])).await;
    let contacts: Vec<Value> = (0..7)
        .map(|i| json!({"LastName": format!("C{i}"), "AccountId": if i < 5 { json!(parent[0]) } else { Value::Null }, "NPS_Score__c": if i % 2 == 0 { json!(i) } else { Value::Null }}))
        .collect();
    org.seed("Contact", Value::Array(contacts)).await;
    let client = org.client();
    client.instance_url().await.unwrap();
    let before = org.api_calls().await;
    let opts = BulkQueryOptions { max_records_per_page: Some(3), poll: fast_poll(), ..BulkQueryOptions::default() };
    let rows: Vec<ContactRow> = client
        .bulk_query("SELECT LastName, Account.Name, NPS_Score__c FROM Contact ORDER BY LastName", opts.clone())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(rows.len(), 7);
    assert_eq!(rows[0], ContactRow { last_name: "C0".into(), account: Some("Acme, Inc".into()), nps: Some(0.0) });
    assert_eq!(rows[1].nps, None);
    assert_eq!(rows[6].account, None);
    let calls = org.api_calls().await - before;
    assert!((5..=7).contains(&calls), "create, poll(s), 3 pages: {calls}");

    // Generic rows, queryAll, and errors.
    let deleted = org.seed("Account", json!([{"Name": "Gone"}])).await;
    client.delete("Account", &salesforce::SalesforceId::parse(&deleted[0]).unwrap()).await.unwrap();
    let all: Vec<std::collections::HashMap<String, String>> = client
        .bulk_query(
            "SELECT Id, IsDeleted FROM Account WHERE Name = 'Gone'",
            BulkQueryOptions { include_deleted: true, ..opts.clone() },
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["IsDeleted"], "true");
    let err = client
        .bulk_query::<Value>("SELECT COUNT() FROM Account", opts.clone())
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert_eq!(err.error_code().map(ErrorCode::as_str), Some("API_ERROR"));
    let err = client.bulk_query::<Value>("SELECT Nope FROM Account", opts).try_collect::<Vec<_>>().await.unwrap_err();
    assert_eq!(err.error_code(), Some(&ErrorCode::InvalidField));
}
