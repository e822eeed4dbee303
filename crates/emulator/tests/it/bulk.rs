//! Bulk API 2.0 on the wire: ingest job lifecycle, CSV results and edge cases, query jobs with
//! locator paging, limits and faults.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Org, code, eventually};
use emulator::salesforce::Config;

async fn create(org: &Org, body: Value) -> (u16, Value) {
    org.json(Method::POST, "jobs/ingest", Some(body)).await
}

async fn open_job(org: &Org, body: Value) -> String {
    let (status, v) = create(org, body).await;
    assert_eq!(status, 200, "{v}");
    v["id"].as_str().unwrap().to_string()
}

async fn put(org: &Org, id: &str, csv: &str) -> u16 {
    org.http
        .put(org.url(&format!("jobs/ingest/{id}/batches")))
        .bearer_auth(&org.token)
        .header("content-type", "text/csv")
        .body(csv.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn close(org: &Org, id: &str) -> (u16, Value) {
    org.json(Method::PATCH, &format!("jobs/ingest/{id}"), Some(json!({"state": "UploadComplete"}))).await
}

/// Polls job info until the job reaches a terminal state.
async fn wait(org: &Org, kind: &str, id: &str) -> Value {
    eventually(&format!("job {id} to finish"), Duration::from_secs(30), || async {
        let (status, v) = org.json(Method::GET, &format!("jobs/{kind}/{id}"), None).await;
        assert_eq!(status, 200, "{v}");
        matches!(v["state"].as_str(), Some("JobComplete" | "Failed" | "Aborted")).then_some(v)
    })
    .await
}

async fn text(org: &Org, path: &str) -> (u16, String, reqwest::header::HeaderMap) {
    let resp = org.call(Method::GET, path, None).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.text().await.unwrap(), headers)
}

/// Runs one ingest job to the end; returns its final info.
async fn run(org: &Org, job: Value, csv: &str) -> (String, Value) {
    let id = open_job(org, job).await;
    assert_eq!(put(org, &id, csv).await, 201);
    let (status, v) = close(org, &id).await;
    assert_eq!(status, 200, "{v}");
    let info = wait(org, "ingest", &id).await;
    (id, info)
}

fn rows(csv: &str) -> Vec<Vec<String>> {
    let mut r = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(csv.as_bytes());
    r.records().map(|r| r.unwrap().iter().map(str::to_string).collect()).collect()
}

fn upsert_accounts() -> Value {
    json!({"object": "Account", "operation": "upsert", "externalIdFieldName": "Pendo_Account_Id__c", "contentType": "CSV", "lineEnding": "LF"})
}

#[tokio::test]
async fn create_answers_the_documented_job_info() {
    let org = Org::start().await;
    let (status, v) = create(&org, upsert_accounts()).await;
    assert_eq!(status, 200, "{v}");
    let id = v["id"].as_str().unwrap();
    assert!(id.starts_with("750") && id.len() == 18, "{id}");
    assert_eq!(v["state"], "Open");
    assert_eq!(v["object"], "Account");
    assert_eq!(v["operation"], "upsert");
    assert_eq!(v["externalIdFieldName"], "Pendo_Account_Id__c");
    assert_eq!(v["contentType"], "CSV");
    assert_eq!(v["columnDelimiter"], "COMMA");
    assert_eq!(v["lineEnding"], "LF");
    assert_eq!(v["concurrencyMode"], "Parallel");
    assert!(v["apiVersion"].is_f64(), "apiVersion is a number: {v}");
    assert_eq!(v["apiVersion"], 60.0);
    assert_eq!(v["contentUrl"], format!("services/data/v60.0/jobs/ingest/{id}/batches"));
    assert!(v["createdDate"].as_str().unwrap().ends_with("+0000"));
    // The 15-character form finds the same job.
    let (status, info) = org.json(Method::GET, &format!("jobs/ingest/{}", &id[..15]), None).await;
    assert_eq!(status, 200);
    assert_eq!(info["jobType"], "V2Ingest");
    assert_eq!(info["numberRecordsProcessed"], 0);
}

#[tokio::test]
async fn create_errors() {
    let org = Org::start().await;
    let (s, v) = create(&org, json!({"operation": "insert"})).await;
    assert_eq!((s, code(&v)), (400, "INVALIDJOB"));
    assert_eq!(v[0]["message"], "InvalidJob : Unable to find object: ");
    let (s, v) = create(&org, json!({"object": "Nope__c", "operation": "insert"})).await;
    assert_eq!((s, code(&v)), (400, "INVALIDJOB"));
    let (s, v) = create(&org, json!({"object": "Account", "operation": "merge"})).await;
    assert_eq!((s, code(&v)), (400, "API_ERROR"));
    assert_eq!(v[0]["message"], "Invalid value: 'merge' supplied for property: 'operation'");
    let (s, v) = create(&org, json!({"object": "Account", "operation": "insert", "contentType": "JSON"})).await;
    assert_eq!((s, code(&v)), (400, "API_ERROR"));
    let (s, v) = create(&org, json!({"object": "Account", "operation": "insert", "columnDelimiter": "COLON"})).await;
    assert_eq!((s, code(&v)), (400, "API_ERROR"));
    let (s, v) = create(&org, json!({"object": "Account", "operation": "insert", "lineEnding": "CR"})).await;
    assert_eq!((s, code(&v)), (400, "API_ERROR"));
    let (s, v) = create(&org, json!({"object": "Account", "operation": "upsert"})).await;
    assert_eq!((s, code(&v)), (400, "INVALIDJOB"));
    let (s, v) = create(&org, json!({"object": "Account", "operation": "upsert", "externalIdFieldName": "Name"})).await;
    assert_eq!((s, code(&v)), (400, "INVALIDJOB"));
    assert!(v[0]["message"].as_str().unwrap().contains("does not match an External ID"), "{v}");
    let (s, v) = org.json(Method::GET, "jobs/ingest/7508d0000000999AAA", None).await;
    assert_eq!((s, code(&v)), (404, "NOT_FOUND"));
}

#[tokio::test]
async fn upsert_job_reports_created_updated_and_failed_rows() {
    let org = Org::start().await;
    org.create("Account", json!({"Name": "Old", "Pendo_Account_Id__c": "a-1"})).await;
    let csv = "Pendo_Account_Id__c,Name,Pendo_Events__c\na-1,Acme,10\na-2,Beta,\na-3,,5\na-4,Delta,notanumber\n";
    let (id, info) = run(&org, upsert_accounts(), csv).await;
    assert_eq!(info["state"], "JobComplete", "{info}");
    assert_eq!(info["numberRecordsProcessed"], 4);
    assert_eq!(info["numberRecordsFailed"], 2);
    assert_eq!(info["retries"], 0);
    for k in ["totalProcessingTime", "apiActiveProcessingTime", "apexProcessingTime"] {
        assert!(info[k].is_u64(), "{k}: {info}");
    }
    assert!(info.get("errorMessage").is_none());

    let (s, ok, headers) = text(&org, &format!("jobs/ingest/{id}/successfulResults")).await;
    assert_eq!(s, 200);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    let ok = rows(&ok);
    assert_eq!(ok[0], ["sf__Id", "sf__Created", "Pendo_Account_Id__c", "Name", "Pendo_Events__c"]);
    assert_eq!(ok.len(), 3);
    let a1 = ok.iter().find(|r| r[2] == "a-1").unwrap();
    assert_eq!(a1[1], "false");
    assert!(a1[0].starts_with("001"));
    let a2 = ok.iter().find(|r| r[2] == "a-2").unwrap();
    assert_eq!(a2[1], "true");
    // Input columns are echoed as sent, the empty cell included.
    assert_eq!(a2[3..], ["Beta", ""]);

    let (_, failed, _) = text(&org, &format!("jobs/ingest/{id}/failedResults")).await;
    let failed = rows(&failed);
    assert_eq!(failed[0], ["sf__Id", "sf__Error", "Pendo_Account_Id__c", "Name", "Pendo_Events__c"]);
    let a3 = failed.iter().find(|r| r[2] == "a-3").unwrap();
    assert_eq!(a3[0], "");
    assert_eq!(a3[1], "REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --");
    let a4 = failed.iter().find(|r| r[2] == "a-4").unwrap();
    assert!(a4[1].starts_with("JSON_PARSER_ERROR:"), "{a4:?}");

    let (_, unprocessed, _) = text(&org, &format!("jobs/ingest/{id}/unprocessedrecords")).await;
    assert_eq!(rows(&unprocessed), vec![vec!["Pendo_Account_Id__c", "Name", "Pendo_Events__c"]]);
    let (s, _, _) = text(&org, &format!("jobs/ingest/{id}/unprocessedRecords")).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn insert_update_delete_and_hard_delete() {
    let org = Org::start().await;
    let job = |op: &str| json!({"object": "Account", "operation": op});
    let (id, info) = run(&org, job("insert"), "Name,BillingCity\nOne,Paris\nTwo,Rome\n").await;
    assert_eq!((info["numberRecordsProcessed"].as_u64(), info["numberRecordsFailed"].as_u64()), (Some(2), Some(0)));
    let (_, ok, _) = text(&org, &format!("jobs/ingest/{id}/successfulResults")).await;
    let ok = rows(&ok);
    assert!(ok[1..].iter().all(|r| r[1] == "true"));
    let ids: Vec<String> = ok[1..].iter().map(|r| r[0].clone()).collect();

    // Update: empty leaves a field unchanged, #N/A clears it.
    let csv = format!("Id,Name,BillingCity\n{},One B,\n{},,#N/A\n", ids[0], ids[1]);
    let (_, info) = run(&org, job("update"), &csv).await;
    assert_eq!(info["numberRecordsFailed"], 0, "{info}");
    let (_, a) = org.json(Method::GET, &format!("sobjects/Account/{}", ids[0]), None).await;
    assert_eq!((a["Name"].as_str(), a["BillingCity"].as_str()), (Some("One B"), Some("Paris")));
    let (_, b) = org.json(Method::GET, &format!("sobjects/Account/{}", ids[1]), None).await;
    assert_eq!((b["Name"].as_str(), b["BillingCity"].clone()), (Some("Two"), Value::Null));

    // Update of a missing record fails that row only.
    let (id, info) = run(&org, job("update"), "Id,Name\n001000000000001,X\n").await;
    assert_eq!(info["numberRecordsFailed"], 1);
    let (_, failed, _) = text(&org, &format!("jobs/ingest/{id}/failedResults")).await;
    assert_eq!(rows(&failed)[1][0], "001000000000001");

    let (_, info) = run(&org, job("delete"), &format!("Id\n{}\n", ids[0])).await;
    assert_eq!(info["numberRecordsFailed"], 0);
    let (_, info) = run(&org, job("hardDelete"), &format!("Id\n{}\n", ids[1])).await;
    assert_eq!(info["numberRecordsFailed"], 0);
    let (_, all) = org.json(Method::GET, "queryAll?q=SELECT+Id,IsDeleted+FROM+Account", None).await;
    assert_eq!(all["totalSize"], 1, "the hard-deleted record is gone, the deleted one is in the bin: {all}");
    assert_eq!(all["records"][0]["IsDeleted"], true);
}

#[tokio::test]
async fn csv_edge_cases() {
    let org = Org::start().await;
    org.create("Account", json!({"Name": "Parent", "Pendo_Account_Id__c": "p-1"})).await;
    // BOM, quoted delimiters, embedded newline and quotes, CRLF line endings, relationship by
    // external ID, a datetime and a semicolon delimiter.
    let csv = "\u{feff}LastName;Title;Account.Pendo_Account_Id__c;Pendo_Last_Active__c\r\n\"Doe; Jr\";\"Line1\r\nLine2 \"\"q\"\"\";p-1;2024-05-01T10:00:00Z\r\n";
    let job = json!({"object": "Contact", "operation": "insert", "columnDelimiter": "SEMICOLON", "lineEnding": "CRLF"});
    let (id, info) = run(&org, job, csv).await;
    assert_eq!(info["numberRecordsFailed"], 0, "{info}");
    let (_, ok, _) = text(&org, &format!("jobs/ingest/{id}/successfulResults")).await;
    assert!(ok.starts_with("\"sf__Id\";\"sf__Created\";\"LastName\""), "{ok}");
    assert!(ok.ends_with("\r\n"));
    let contact_id = ok.lines().nth(1).unwrap().split(';').next().unwrap().trim_matches('"').to_string();
    let (_, c) = org.json(Method::GET, &format!("sobjects/Contact/{contact_id}"), None).await;
    assert_eq!(c["LastName"], "Doe; Jr");
    assert_eq!(c["Title"], "Line1\r\nLine2 \"q\"");
    assert_eq!(c["Pendo_Last_Active__c"], "2024-05-01T10:00:00.000+0000");
    assert!(c["AccountId"].as_str().unwrap().starts_with("001"));

    // A parent that does not exist fails the row; booleans and dates are typed.
    let csv = "Name|StageName|CloseDate|Is_POC__c|Account.Pendo_Account_Id__c\nO1|Prospecting|2024-06-30|1|\nO2|Prospecting|30/06/2024|true|\nO3|Prospecting|2024-06-30|false|nope\n";
    let job = json!({"object": "Opportunity", "operation": "insert", "columnDelimiter": "PIPE"});
    let (id, info) = run(&org, job, csv).await;
    assert_eq!(info["numberRecordsFailed"], 2, "{info}");
    let (_, failed, _) = text(&org, &format!("jobs/ingest/{id}/failedResults")).await;
    let failed = rows(&failed.replace('|', ","));
    assert!(
        failed.iter().any(|r| r[2] == "O3" && r[1].contains("Foreign key external ID: nope not found")),
        "{failed:?}"
    );
    let (_, q) = org.json(Method::GET, "query?q=SELECT+Is_POC__c,CloseDate+FROM+Opportunity", None).await;
    assert_eq!(q["records"][0]["Is_POC__c"], true);
    assert_eq!(q["records"][0]["CloseDate"], "2024-06-30");

    // Tab, caret and backquote delimiters read as documented.
    for (name, sep) in [("TAB", '\t'), ("CARET", '^'), ("BACKQUOTE", '`')] {
        let csv = format!("Name{sep}BillingCity\n\"A{sep}B\"{sep}X\n");
        let (_, info) =
            run(&org, json!({"object": "Account", "operation": "insert", "columnDelimiter": name}), &csv).await;
        assert_eq!(info["numberRecordsFailed"], 0, "{name}: {info}");
    }
    let (_, q) = org.json(Method::GET, "query?q=SELECT+Name+FROM+Account+WHERE+BillingCity='X'", None).await;
    assert_eq!(q["totalSize"], 3);
    assert_eq!(q["records"][0]["Name"], "A\tB");
}

#[tokio::test]
async fn unknown_columns_fail_the_job_and_leave_rows_unprocessed() {
    let org = Org::start().await;
    let (id, info) = run(&org, json!({"object": "Account", "operation": "insert"}), "Name,Bogus__c\nA,1\nB,2\n").await;
    assert_eq!(info["state"], "Failed");
    assert_eq!(info["errorMessage"], "InvalidBatch : Field name not found : Bogus__c");
    let (_, un, _) = text(&org, &format!("jobs/ingest/{id}/unprocessedrecords")).await;
    assert_eq!(rows(&un).len(), 3);
    // An upsert without its external ID column fails the same way.
    let (_, info) = run(&org, upsert_accounts(), "Name\nA\n").await;
    assert_eq!(info["errorMessage"], "InvalidBatch : Field name not found : Pendo_Account_Id__c");
}

#[tokio::test]
async fn second_upload_makes_the_close_fail() {
    let org = Org::start().await;
    let id = open_job(&org, json!({"object": "Account", "operation": "insert"})).await;
    assert_eq!(put(&org, &id, "Name\nA\n").await, 201);
    assert_eq!(put(&org, &id, "Name\nB\n").await, 201);
    let (s, v) = close(&org, &id).await;
    assert_eq!((s, code(&v)), (400, "INVALIDJOB"));
    let msg = v[0]["message"].as_str().unwrap();
    assert!(msg.starts_with(&format!("Found multipe contents for job: <{}>", &id[..15])), "{msg}");
    // Abort, then delete.
    let (s, v) = org.json(Method::PATCH, &format!("jobs/ingest/{id}"), Some(json!({"state": "Aborted"}))).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("Aborted")));
    assert_eq!(put(&org, &id, "Name\nC\n").await, 409);
    let resp = org.call(Method::DELETE, &format!("jobs/ingest/{id}"), None).await;
    assert_eq!(resp.status().as_u16(), 204);
    let (s, _) = org.json(Method::GET, &format!("jobs/ingest/{id}"), None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn jobs_are_listed_and_counted() {
    let org = Org::start().await;
    let before = org.usage().await;
    let (_, _) = run(&org, json!({"object": "Account", "operation": "insert"}), "Name\nA\nB\n").await;
    let (s, list) = org.json(Method::GET, "jobs/ingest", None).await;
    assert_eq!(s, 200);
    assert_eq!(list["done"], true);
    assert_eq!(list["records"].as_array().unwrap().len(), 1);
    let after = org.usage().await;
    let bulk_calls = after["byKind"]["bulk"].as_u64().unwrap() - before["byKind"]["bulk"].as_u64().unwrap_or(0);
    assert!(bulk_calls >= 4, "create, upload, close, poll(s), list: {after}");
    assert_eq!(after["bulk"]["batches"], 1);
    assert_eq!(after["bulk"]["records"], 2);
    let (_, limits) = org.json(Method::GET, "limits", None).await;
    assert_eq!(limits["DailyBulkApiBatches"]["Remaining"], 14_999);
}

#[tokio::test]
async fn batches_are_counted_per_ten_thousand_rows_and_limits_refuse() {
    let org = Org::start().await;
    let mut csv = String::from("Name\n");
    for i in 0..25_000 {
        csv.push_str(&format!("N{i}\n"));
    }
    let (_, info) = run(&org, json!({"object": "Account", "operation": "insert"}), &csv).await;
    assert_eq!(info["numberRecordsProcessed"], 25_000);
    let (_, limits) = org.json(Method::GET, "limits", None).await;
    assert_eq!(limits["DailyBulkApiBatches"]["Remaining"], 14_997, "3 internal batches");
    assert_eq!(limits["DailyBulkV2IngestRecords"]["Remaining"], 150_000_000 - 25_000);

    let (s, _) = org.admin(Method::PUT, "limits", json!({"DailyBulkApiBatches": {"Remaining": 0}})).await;
    assert_eq!(s, 200);
    let (s, v) = create(&org, json!({"object": "Account", "operation": "insert"})).await;
    assert_eq!((s, code(&v)), (400, "EXCEEDED_QUOTA"));
    let (s, _) = org.admin(Method::PUT, "limits", json!({"DailyBulkV2QueryJobs": {"Remaining": 0}})).await;
    assert_eq!(s, 200);
    let (s, v) = org
        .json(Method::POST, "jobs/query", Some(json!({"operation": "query", "query": "SELECT Id FROM Account"})))
        .await;
    assert_eq!((s, code(&v)), (400, "EXCEEDED_QUOTA"));
}

#[tokio::test]
async fn upload_limit_is_the_bulk_one() {
    let org = Org::with(Config { max_body_bytes: 1000, max_bulk_upload_bytes: 5000, ..Config::default() }).await;
    let id = open_job(&org, json!({"object": "Account", "operation": "insert"})).await;
    let big = format!("Name\n{}", "abcdefghi\n".repeat(300));
    assert_eq!(put(&org, &id, &big).await, 201, "larger than the REST limit, within the Bulk one");
    let id = open_job(&org, json!({"object": "Account", "operation": "insert"})).await;
    let too_big = format!("Name\n{}", "abcdefghi\n".repeat(600));
    assert_eq!(put(&org, &id, &too_big).await, 413);
}

#[tokio::test]
async fn faults_fail_rows_jobs_and_slow_processing() {
    let org = Org::start().await;
    let (s, _) = org.admin(Method::PUT, "faults", json!({"seed": 3, "bulkUnableToLockRow": 0.5})).await;
    assert_eq!(s, 200);
    let mut csv = String::from("Name\n");
    for i in 0..200 {
        csv.push_str(&format!("N{i}\n"));
    }
    let (id, info) = run(&org, json!({"object": "Account", "operation": "insert"}), &csv).await;
    let failed = info["numberRecordsFailed"].as_u64().unwrap();
    assert!(failed > 50 && failed < 150, "{info}");
    let (_, f, _) = text(&org, &format!("jobs/ingest/{id}/failedResults")).await;
    assert!(rows(&f)[1][1].starts_with("UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to this record"));

    let (s, _) = org.admin(Method::PUT, "faults", json!({"bulkJobFailure": 1.0, "bulkProcessingDelayMs": 20})).await;
    assert_eq!(s, 200);
    let mut csv = String::from("Name\n");
    for i in 0..15_000 {
        csv.push_str(&format!("N{i}\n"));
    }
    let (id, info) = run(&org, json!({"object": "Account", "operation": "insert"}), &csv).await;
    assert_eq!(info["state"], "Failed");
    assert!(info["errorMessage"].as_str().unwrap().starts_with("InternalServerError"));
    assert_eq!(info["numberRecordsProcessed"], 10_000);
    let (_, un, _) = text(&org, &format!("jobs/ingest/{id}/unprocessedrecords")).await;
    assert_eq!(rows(&un).len(), 5_001);
}

#[tokio::test]
async fn abort_stops_a_slow_job() {
    let org = Org::start().await;
    org.admin(Method::PUT, "faults", json!({"bulkProcessingDelayMs": 300})).await;
    let id = open_job(&org, json!({"object": "Account", "operation": "insert"})).await;
    put(&org, &id, "Name\nA\n").await;
    close(&org, &id).await;
    let (s, v) = org.json(Method::PATCH, &format!("jobs/ingest/{id}"), Some(json!({"state": "Aborted"}))).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("Aborted")));
    // Kept a sleep: it lets the worker's 300 ms processing delay pass, so a worker the abort
    // failed to stop would have processed the row by the check below. Doing nothing has no event
    // to poll for, and the delay is tokio time on the test's own runtime, where pausing it would
    // fire the HTTP client's timeouts too.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let info = wait(&org, "ingest", &id).await;
    assert_eq!(info["state"], "Aborted");
    assert_eq!(info["numberRecordsProcessed"], 0);
    let (s, v) = org.json(Method::PATCH, &format!("jobs/ingest/{id}"), Some(json!({"state": "UploadComplete"}))).await;
    assert_eq!((s, code(&v)), (400, "INVALIDJOBSTATE"));
}

#[tokio::test]
async fn query_jobs_page_with_locators() {
    let org = Org::start().await;
    let parent = org.create("Account", json!({"Name": "Parent, Inc"})).await;
    for i in 0..5 {
        org.create("Contact", json!({"LastName": format!("L{i}"), "AccountId": parent})).await;
    }
    org.create("Contact", json!({"LastName": "Orphan"})).await;
    let (s, job) = org
        .json(
            Method::POST,
            "jobs/query",
            Some(
                json!({"operation": "query", "query": "SELECT LastName, Account.Name FROM Contact ORDER BY LastName"}),
            ),
        )
        .await;
    assert_eq!(s, 200, "{job}");
    assert_eq!(job["state"], "UploadComplete");
    assert_eq!(job["operation"], "query");
    assert_eq!(job["object"], "Contact");
    let id = job["id"].as_str().unwrap().to_string();
    let info = wait(&org, "query", &id).await;
    assert_eq!(info["state"], "JobComplete");
    assert_eq!(info["jobType"], "V2Query");
    assert_eq!(info["numberRecordsProcessed"], 6);

    let mut all = Vec::new();
    let mut locator: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &locator {
            None => format!("jobs/query/{id}/results?maxRecords=4"),
            Some(l) => format!("jobs/query/{id}/results?maxRecords=4&locator={l}"),
        };
        let (s, body, headers) = text(&org, &path).await;
        assert_eq!(s, 200, "{body}");
        pages += 1;
        let page = rows(&body);
        assert_eq!(page[0], ["LastName", "Account.Name"], "every page has the header");
        assert_eq!(headers["sforce-numberofrecords"].to_str().unwrap(), (page.len() - 1).to_string());
        all.extend(page.into_iter().skip(1));
        let next = headers["sforce-locator"].to_str().unwrap().to_string();
        if next == "null" {
            break;
        }
        locator = Some(next);
    }
    assert_eq!(pages, 2);
    assert_eq!(all.len(), 6);
    assert_eq!(all[0], ["L0", "Parent, Inc"]);
    assert_eq!(all[5], ["Orphan", ""]);
}

#[tokio::test]
async fn query_job_errors_and_query_all() {
    let org = Org::start().await;
    let post = |q: &str, op: &str| org.json(Method::POST, "jobs/query", Some(json!({"operation": op, "query": q})));
    let (s, v) = post("SELECT COUNT() FROM Account", "query").await;
    assert_eq!((s, code(&v)), (400, "API_ERROR"));
    let (s, v) = post("SELECT Nope FROM Account", "query").await;
    assert_eq!((s, code(&v)), (400, "INVALID_FIELD"));
    let (s, v) = post("SELEC Id FROM Account", "query").await;
    assert_eq!((s, code(&v)), (400, "MALFORMED_QUERY"));
    let (s, v) = post("SELECT Id FROM Account", "upsert").await;
    assert_eq!((s, code(&v)), (400, "API_ERROR"));

    let id = org.create("Account", json!({"Name": "Gone"})).await;
    org.call(Method::DELETE, &format!("sobjects/Account/{id}"), None).await;
    let (_, job) = post("SELECT Id, IsDeleted FROM Account", "queryAll").await;
    let jid = job["id"].as_str().unwrap().to_string();
    wait(&org, "query", &jid).await;
    let (_, body, headers) = text(&org, &format!("jobs/query/{jid}/results")).await;
    assert_eq!(headers["sforce-locator"], "null");
    assert_eq!(rows(&body)[1], [id.as_str(), "true"]);
    let (s, _, _) = text(&org, &format!("jobs/query/{jid}/results?locator=garbage")).await;
    assert_eq!(s, 400);
    let (s, list) = org.json(Method::GET, "jobs/query", None).await;
    assert_eq!((s, list["records"].as_array().map(Vec::len)), (200, Some(1)));
    let resp = org.call(Method::DELETE, &format!("jobs/query/{jid}"), None).await;
    assert_eq!(resp.status().as_u16(), 204);
}
