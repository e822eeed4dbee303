//! Wire-level behaviour against a scripted server: request headers and token forms, body caps,
//! non-JSON error pages, refresh limits, which failures are re-sent, and query pagination rules.

use std::time::Duration;

use futures_util::TryStreamExt;
use salesforce::{
    ApiVersion, Client, ClientAuth, ClientConfig, Error, ErrorCode, OAuth, QueryOptions, QueryPage, RetryClass, Secret,
};
use serde_json::{Value, json};

use crate::mock::{Captured, Ctx, MockServer, Reply, token_reply};
use crate::support::*;

fn is_token(r: &Captured) -> bool {
    r.path() == "/services/oauth2/token"
}

fn config(max_attempts: u32) -> ClientConfig {
    ClientConfig {
        retry: fast_retries(max_attempts),
        request_timeout: Duration::from_millis(500),
        ..ClientConfig::default()
    }
}

fn client(mock: &MockServer, config: ClientConfig) -> Client {
    let auth = OAuth::password(&mock.url, CLIENT_ID, CLIENT_SECRET, USERNAME, PASSWORD).unwrap();
    Client::new(config, auth).unwrap()
}

/// A server whose data requests all get `reply`.
async fn answering(reply: impl Fn(&Captured, &Ctx<'_>) -> Reply + Send + Sync + 'static) -> MockServer {
    MockServer::start(move |r, ctx| if is_token(r) { token_reply(ctx) } else { reply(r, ctx) }).await
}

fn sf_error(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(status, json!([{"message": message, "errorCode": code}]))
}

#[tokio::test]
async fn every_call_carries_auth_call_options_json_and_gzip() {
    let mock = answering(|_, _| Reply::Respond {
        status: 200,
        headers: vec![
            ("Content-Type", "application/json".into()),
            ("Sforce-Limit-Info", "api-usage=5/100; per-app-api-usage=2/50(appName=usagesync)".into()),
        ],
        body: br#"{"DailyApiRequests":{"Max":100,"Remaining":95}}"#.to_vec(),
    })
    .await;
    let client = client(&mock, ClientConfig { client_name: "usagesync-test".into(), ..config(1) });
    client.limits().await.unwrap();
    client.limits().await.unwrap();

    let data = mock.data_requests();
    assert_eq!(data.len(), 2);
    for r in &data {
        assert_eq!(r.method, "GET");
        assert_eq!(r.path(), "/services/data/v62.0/limits");
        assert!(r.header("authorization").unwrap().starts_with("Bearer 00D000000000001!token"));
        assert_eq!(r.header("sforce-call-options"), Some("client=usagesync-test"));
        assert!(r.header("accept-encoding").unwrap().contains("gzip"));
        assert_eq!(r.header("accept"), Some("application/json"));
    }
    // One token for both calls.
    assert_eq!(mock.requests().iter().filter(|r| is_token(r)).count(), 1);
    let usage = client.api_usage().unwrap().info;
    assert_eq!(usage.api_usage.unwrap().remaining(), 95);
    let app = usage.per_app.unwrap();
    assert_eq!((app.used, app.max, app.app_name.as_deref()), (2, 50, Some("usagesync")));
}

fn form(r: &Captured) -> std::collections::HashMap<String, String> {
    r.form().into_iter().collect()
}

#[tokio::test]
async fn token_requests_send_the_documented_form_fields() {
    let mock = answering(|_, _| Reply::json(200, json!({}))).await;
    let flows: Vec<(&str, OAuth)> = vec![
        ("password", OAuth::password(&mock.url, CLIENT_ID, CLIENT_SECRET, USERNAME, PASSWORD).unwrap()),
        ("cc-form", OAuth::client_credentials(&mock.url, CLIENT_ID, CLIENT_SECRET, ClientAuth::Form).unwrap()),
        ("cc-basic", OAuth::client_credentials(&mock.url, CLIENT_ID, CLIENT_SECRET, ClientAuth::Basic).unwrap()),
        ("refresh", OAuth::refresh_token(&mock.url, CLIENT_ID, Some(Secret::new(CLIENT_SECRET)), "rt-1").unwrap()),
        ("jwt", OAuth::jwt_bearer(&mock.url, CLIENT_ID, USERNAME, JWT_PRIVATE_KEY).unwrap()),
    ];
    for (name, flow) in flows {
        let c = Client::new(config(1), flow).unwrap();
        c.identity().await.unwrap();
        let token_req = mock.requests().into_iter().rev().find(is_token).unwrap();
        assert_eq!(token_req.method, "POST", "{name}");
        assert!(token_req.header("content-type").unwrap().starts_with("application/x-www-form-urlencoded"), "{name}");
        let f = form(&token_req);
        match name {
            "password" => {
                assert_eq!(f["grant_type"], "password");
                assert_eq!(f["client_id"], CLIENT_ID);
                assert_eq!(f["client_secret"], CLIENT_SECRET);
                assert_eq!(f["username"], USERNAME);
                assert_eq!(f["password"], PASSWORD);
            }
            "cc-form" => {
                assert_eq!(f["grant_type"], "client_credentials");
                assert_eq!(f["client_id"], CLIENT_ID);
                assert_eq!(f["client_secret"], CLIENT_SECRET);
                assert!(token_req.header("authorization").is_none());
            }
            "cc-basic" => {
                assert_eq!(f["grant_type"], "client_credentials");
                assert!(!f.contains_key("client_secret"));
                assert_eq!(
                    token_req.header("authorization"),
                    Some("Basic dXNhZ2VzeW5jLWVtdWxhdG9yOmVtdWxhdG9yLXNlY3JldA==")
                );
            }
            "refresh" => {
                assert_eq!(f["grant_type"], "refresh_token");
                assert_eq!(f["refresh_token"], "rt-1");
                assert_eq!(f["client_id"], CLIENT_ID);
                assert_eq!(f["client_secret"], CLIENT_SECRET);
            }
            "jwt" => {
                assert_eq!(f["grant_type"], "urn:ietf:params:oauth:grant-type:jwt-bearer");
                let assertion = &f["assertion"];
                let header = jsonwebtoken::decode_header(assertion).unwrap();
                assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
                let claims: Value = jsonwebtoken::dangerous::insecure_decode(assertion).unwrap().claims;
                assert_eq!(claims["iss"], CLIENT_ID);
                assert_eq!(claims["sub"], USERNAME);
                assert_eq!(claims["aud"], mock.url.as_str());
                assert!(claims["exp"].is_i64());
            }
            _ => unreachable!(),
        }
    }
}

#[tokio::test]
async fn token_endpoint_outage_is_retryable_and_retried() {
    let mock = MockServer::start(|r, ctx| {
        if is_token(r) && ctx.total_index == 0 {
            Reply::Respond { status: 503, headers: vec![], body: b"<html>down</html>".to_vec() }
        } else if is_token(r) {
            token_reply(ctx)
        } else {
            Reply::json(200, json!({}))
        }
    })
    .await;
    let client = client(&mock, config(3));
    client.limits().await.unwrap();
    assert_eq!(mock.requests().iter().filter(|r| is_token(r)).count(), 2);
}

#[tokio::test]
async fn oversized_bodies_are_cut_off() {
    let mock = answering(|_, _| Reply::json(200, json!({"padding": "x".repeat(10_000)}))).await;
    let client = client(&mock, ClientConfig { max_response_bytes: 1024, ..config(3) });
    let err = client.limits().await.unwrap_err();
    assert!(matches!(err, Error::BodyTooLarge { limit: 1024, .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(mock.data_requests().len(), 1);
}

#[tokio::test]
async fn html_error_pages_are_unexpected_responses_and_5xx_retries() {
    let mock = answering(|_, _| Reply::Respond {
        status: 502,
        headers: vec![("Content-Type", "text/html".into())],
        body: b"<html><body>Bad Gateway</body></html>".to_vec(),
    })
    .await;
    let client = client(&mock, config(3));
    let err = client.limits().await.unwrap_err();
    match &err {
        Error::UnexpectedResponse { status, snippet, .. } => {
            assert_eq!(status.as_u16(), 502);
            assert!(snippet.contains("Bad Gateway"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.retry_class(), RetryClass::Backoff);
    assert_eq!(mock.data_requests().len(), 3, "retried up to max attempts");
}

#[tokio::test]
async fn a_second_401_after_refresh_is_returned_not_looped() {
    let mock = answering(|_, _| sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")).await;
    let client = client(&mock, config(3));
    let err = client.limits().await.unwrap_err();
    assert_eq!(err.error_code(), Some(&ErrorCode::InvalidSessionId));
    assert_eq!(err.retry_class(), RetryClass::RefreshAuth);
    assert_eq!(mock.data_requests().len(), 2);
    assert_eq!(mock.requests().iter().filter(|r| is_token(r)).count(), 2);
    let tokens: Vec<_> = mock.data_requests().iter().map(|r| r.header("authorization").unwrap().to_owned()).collect();
    assert_ne!(tokens[0], tokens[1], "the retry used the new token");
}

/// Sessions that expire twice during one call's retries (401, then a 503 retried, then 401
/// again) are refreshed twice and the call succeeds: the second expiry is a new one.
#[tokio::test]
async fn a_session_expiring_again_during_a_calls_retries_is_refreshed_again() {
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = n.clone();
    let mock = answering(move |_, _| match seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
        0 | 2 => sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid"),
        1 => sf_error(503, "SERVER_UNAVAILABLE", "Server temporarily unavailable"),
        _ => Reply::json(200, json!({"DailyApiRequests": {"Max": 100, "Remaining": 95}})),
    })
    .await;
    let client = client(&mock, config(3));
    client.limits().await.unwrap();
    assert_eq!(mock.data_requests().len(), 4);
    assert_eq!(mock.requests().iter().filter(|r| is_token(r)).count(), 3, "two refreshes after the first login");
}

#[tokio::test]
async fn creates_are_not_resent_after_500_or_timeout_but_reads_are() {
    for reply in ["500", "hang", "close"] {
        let make = move || match reply {
            "500" => sf_error(500, "UNKNOWN_EXCEPTION", "An unexpected error occurred."),
            "hang" => Reply::Hang,
            _ => Reply::Close,
        };
        let mock = answering(move |_, _| make()).await;
        let client = client(&mock, config(3));
        let err = client.create("Account", &json!({"Name": "A"})).await.unwrap_err();
        assert!(err.may_have_committed(), "{reply}: {err:?}");
        assert!(err.is_retryable(), "{reply}: a retry could help, but only after a dedupe check");
        assert_eq!(mock.data_requests().len(), 1, "{reply}: create sent once");

        let err = client.limits().await.unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(mock.data_requests().len(), 1 + 3, "{reply}: read retried");
    }
}

#[tokio::test]
async fn creates_are_resent_after_503_and_lock_errors() {
    for (status, code) in [(503, "SERVER_UNAVAILABLE"), (400, "UNABLE_TO_LOCK_ROW")] {
        let mock = answering(move |_, ctx| {
            if ctx.data_index == 0 {
                sf_error(status, code, "try again")
            } else {
                Reply::json(201, json!({"id": "001R00000064wdtIAA", "success": true, "errors": []}))
            }
        })
        .await;
        let client = client(&mock, config(3));
        let created = client.create("Account", &json!({"Name": "A"})).await.unwrap();
        assert_eq!(created.id.as_str(), "001R00000064wdtIAA");
        assert_eq!(mock.data_requests().len(), 2, "{code}");
    }
}

#[tokio::test]
async fn retry_after_is_honoured_but_capped() {
    // An hour-long Retry-After would stall this test if it were not capped at max_backoff.
    let mock = answering(|_, ctx| {
        if ctx.data_index == 0 {
            Reply::Respond {
                status: 503,
                headers: vec![("Retry-After", "3600".into()), ("Content-Type", "application/json".into())],
                body: br#"[{"message":"busy","errorCode":"SERVER_UNAVAILABLE"}]"#.to_vec(),
            }
        } else {
            Reply::json(200, json!({}))
        }
    })
    .await;
    let client = client(&mock, config(3));
    client.limits().await.unwrap();
}

#[tokio::test]
async fn duplicate_rule_details_survive_the_misspelt_key() {
    let body = json!([{
        "duplicateResut": {"allowSave": true, "duplicateRule": "Standard_Contact_Duplicate_Rule",
            "duplicateRuleEntityType": "Contact", "errorMessage": "dup",
            "matchResults": [{"entityType": "Contact", "errors": [], "matchEngine": "FuzzyMatchEngine",
                "matchRecords": [{"additionalInformation": [], "fieldDiffs": [], "matchConfidence": 100.0,
                    "record": {"attributes": {"type": "Contact", "url": "/services/data/v54.0/sobjects/Contact/0038M0000016Wv8QAE"}, "Id": "0038M0000016Wv8QAE"}}],
                "rule": "Standard_Contact_Match_Rule_v1_1", "size": 1, "success": true}]},
        "errorCode": "DUPLICATES_DETECTED", "message": "dup"},
        {"errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": "also", "fields": ["Email"]}]);
    let mock = answering(move |_, _| Reply::json(400, body.clone())).await;
    let client = client(&mock, config(3));
    let err = client.create("Contact", &json!({"LastName": "D"})).await.unwrap_err();
    let e = api(&err);
    assert_eq!(e.error_code, ErrorCode::DuplicatesDetected);
    assert_eq!(e.duplicate_result.as_ref().unwrap().matched_ids(), vec!["0038M0000016Wv8QAE"]);
    assert_eq!(e.others[0].error_code, ErrorCode::FieldCustomValidationException);
    assert_eq!(err.retry_class(), RetryClass::Permanent);
}

#[tokio::test]
async fn query_follows_locators_with_batch_size_and_encoded_soql() {
    let mock = answering(|r, _| match r.path() {
        "/services/data/v62.0/query" => Reply::json(
            200,
            json!({"totalSize": 3, "done": false,
                   "nextRecordsUrl": "/services/data/v62.0/query/01gD0000002HU6KIAW-2",
                   "records": [{"Name": "a"}, {"Name": "b"}]}),
        ),
        "/services/data/v62.0/query/01gD0000002HU6KIAW-2" => {
            Reply::json(200, json!({"totalSize": 3, "done": true, "records": [{"Name": "c"}]}))
        }
        _ => sf_error(404, "NOT_FOUND", "The requested resource does not exist"),
    })
    .await;
    let client = client(&mock, config(1));
    let soql = "SELECT Name FROM Account WHERE Name = 'a&b+c%'";
    let pages: Vec<QueryPage<Value>> = client
        .query_pages(soql, QueryOptions { batch_size: Some(200), include_deleted: false })
        .try_collect()
        .await
        .unwrap();
    assert_eq!(pages.len(), 2);
    let data = mock.data_requests();
    let first_query: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(data[0].target.split_once('?').unwrap().1.as_bytes()).into_owned().collect();
    assert_eq!(first_query["q"], soql);
    for r in &data {
        assert_eq!(r.header("sforce-query-options"), Some("batchSize=200"));
    }
    let names: Vec<Value> = client.query(soql).map_ok(|v: Value| v["Name"].clone()).try_collect().await.unwrap();
    assert_eq!(names, vec![json!("a"), json!("b"), json!("c")]);
}

/// Salesforce pages a large child set inside its parent's row (`done: false` with a locator of
/// its own); `query_with_children` fetches the rest before handing the row over.
#[tokio::test]
async fn paged_children_are_completed_from_their_own_locator() {
    let mock = answering(|r, _| match r.path() {
        "/services/data/v62.0/query" => Reply::json(
            200,
            json!({"totalSize": 2, "done": true, "records": [
                {"Name": "Big", "Contacts": {"totalSize": 3, "done": false,
                    "nextRecordsUrl": "/services/data/v62.0/query/01gKIDS-2", "records": [{"LastName": "a"}, {"LastName": "b"}]}},
                {"Name": "None", "Contacts": null}
            ]}),
        ),
        "/services/data/v62.0/query/01gKIDS-2" => {
            Reply::json(200, json!({"totalSize": 3, "done": true, "records": [{"LastName": "c"}]}))
        }
        _ => sf_error(404, "NOT_FOUND", "The requested resource does not exist"),
    })
    .await;
    let client = client(&mock, config(1));
    let rows: Vec<Value> = client
        .query_with_children("SELECT Name, (SELECT LastName FROM Contacts) FROM Account", QueryOptions::default())
        .await
        .unwrap();
    let kids: Vec<&Value> = rows[0]["Contacts"]["records"].as_array().unwrap().iter().map(|c| &c["LastName"]).collect();
    assert_eq!(kids, vec!["a", "b", "c"]);
    assert_eq!(rows[0]["Contacts"]["done"], json!(true));
    assert!(rows[0]["Contacts"].get("nextRecordsUrl").is_none());
    assert_eq!(rows[1]["Contacts"], Value::Null);
    assert_eq!(mock.data_requests().len(), 2);
}

#[tokio::test]
async fn query_all_uses_the_query_all_resource() {
    let mock = answering(|_, _| Reply::json(200, json!({"totalSize": 0, "done": true, "records": []}))).await;
    let client = client(&mock, config(1));
    let rows: Vec<Value> = client.query_all("SELECT Id FROM Account").try_collect().await.unwrap();
    assert!(rows.is_empty());
    assert_eq!(mock.data_requests()[0].path(), "/services/data/v62.0/queryAll");
}

#[tokio::test]
async fn broken_pagination_is_a_protocol_error() {
    for page in [
        json!({"totalSize": 5, "done": false, "records": []}),
        json!({"totalSize": 5, "done": false, "nextRecordsUrl": "https://evil.example.com/services/data/v62.0/query/x", "records": []}),
    ] {
        let mock = answering(move |_, _| Reply::json(200, page.clone())).await;
        let client = client(&mock, config(1));
        let err = client.query_collect::<Value>("SELECT Id FROM Account").await.unwrap_err();
        assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
        assert_eq!(mock.data_requests().len(), 1, "never followed a foreign URL");
    }
}

#[tokio::test]
async fn collections_result_count_mismatch_is_a_protocol_error() {
    let mock =
        answering(|_, _| Reply::json(200, json!([{"id": "001R00000064wdtIAA", "success": true, "errors": []}]))).await;
    let client = client(&mock, config(1));
    let err = client.create_many("Account", &[json!({"Name": "a"}), json!({"Name": "b"})], false).await.unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    assert!(err.may_have_committed());
}

#[tokio::test]
async fn versions_are_requested_without_a_bearer_token() {
    let mock = answering(|_, _| {
        Reply::json(200, json!([{"label": "Winter '25", "url": "/services/data/v62.0", "version": "62.0"}]))
    })
    .await;
    let client = client(&mock, config(1));
    let v = client.versions().await.unwrap();
    assert_eq!(v[0].version, "62.0");
    let r = &mock.data_requests()[0];
    assert_eq!(r.path(), "/services/data/");
    assert!(r.header("authorization").is_none());
}

#[tokio::test]
async fn old_api_versions_go_into_every_path() {
    let mock = answering(|_, _| Reply::json(200, json!({}))).await;
    let client = client(&mock, ClientConfig { api_version: ApiVersion::new(45), ..config(1) });
    client.limits().await.unwrap();
    assert_eq!(mock.data_requests()[0].path(), "/services/data/v45.0/limits");
    let err = client.upsert_many("Account", "Ext__c", &[json!({"Ext__c": "1"})], false).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "Collections upsert needs v46+");
}

/// A scripted Bulk ingest: the job completes at the first poll with `failed` of its 2 rows
/// failed; the result files hold the second row as failed when one failed.
async fn bulk_job_server(operation: &'static str, failed: u64) -> MockServer {
    answering(move |r, _| {
        let job = |state: &str| {
            json!({"id": "750000000000001AAA", "operation": operation, "object": "Account", "state": state,
                   "numberRecordsProcessed": 2, "numberRecordsFailed": failed})
        };
        let csv = |body: &str| Reply::Respond {
            status: 200,
            headers: vec![("Content-Type", "text/csv".into())],
            body: body.as_bytes().to_vec(),
        };
        match (r.method.as_str(), r.path().rsplit('/').next().unwrap_or_default()) {
            ("POST", "ingest") => Reply::json(200, job("Open")),
            ("PUT", "batches") => Reply::Respond { status: 201, headers: vec![], body: vec![] },
            ("PATCH", _) => Reply::json(200, job("UploadComplete")),
            ("GET", "successfulResults") if failed == 0 => {
                csv("sf__Id,sf__Created,Id,Name\n001000000000001AAA,false,001000000000001AAA,A\n001000000000002AAA,false,001000000000002AAA,B\n")
            }
            ("GET", "successfulResults") => csv("sf__Id,sf__Created,Id,Name\n001000000000001AAA,false,001000000000001AAA,A\n"),
            ("GET", "failedResults") => {
                csv("sf__Id,sf__Error,Id,Name\n001000000000002AAA,ENTITY_IS_DELETED:entity is deleted:--,001000000000002AAA,B\n")
            }
            ("GET", _) => Reply::json(200, job("JobComplete")),
            _ => Reply::json(404, json!([{"message": "unexpected", "errorCode": "NOT_FOUND"}])),
        }
    })
    .await
}

fn ingest_paths(mock: &MockServer) -> Vec<String> {
    mock.data_requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path().rsplit('/').next().unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn an_update_job_whose_every_row_succeeded_reads_no_result_file() {
    use salesforce::bulk::{IngestOptions, Operation, PollPolicy, RowStatus};
    let rows =
        || vec![json!({"Id": "001000000000001AAA", "Name": "A"}), json!({"Id": "001000000000002AAA", "Name": "B"})];
    let poll = PollPolicy { initial: Duration::from_millis(1), ..PollPolicy::default() };
    let options = |op| IngestOptions { poll, ..IngestOptions::new("Account", op) };

    // Every row succeeded: the outcomes come from the spooled input, no result file is read.
    let mock = bulk_job_server("update", 0).await;
    let report = client(&mock, config(1)).bulk_ingest(&options(Operation::Update), rows()).await.unwrap();
    assert_eq!(
        ingest_paths(&mock),
        ["POST ingest", "PUT batches", "PATCH 750000000000001AAA", "GET 750000000000001AAA"]
    );
    assert_eq!((report.summary.succeeded, report.summary.failed, report.summary.unmatched), (2, 0, 0));
    let got: Vec<_> = report
        .outcomes
        .iter()
        .map(|o| (o.index, o.id.as_ref().map(|i| i.as_str().to_owned()), o.status.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (Some(0), Some("001000000000001AAA".to_owned()), RowStatus::Success { created: false }),
            (Some(1), Some("001000000000002AAA".to_owned()), RowStatus::Success { created: false }),
        ]
    );
    assert_eq!(report.outcomes[1].input_value("Name"), Some("B"));

    // One row failed: both result files are read, as before.
    let mock = bulk_job_server("update", 1).await;
    let report = client(&mock, config(1)).bulk_ingest(&options(Operation::Update), rows()).await.unwrap();
    let paths = ingest_paths(&mock);
    assert!(
        paths.contains(&"GET successfulResults".to_owned()) && paths.contains(&"GET failedResults".to_owned()),
        "{paths:?}"
    );
    assert_eq!((report.summary.succeeded, report.summary.failed), (1, 1));
    assert!(matches!(&report.outcomes[1].status, RowStatus::Failed(e) if e.status_code == ErrorCode::EntityIsDeleted));

    // An upsert needs the Ids Salesforce gave: it reads its successful results.
    let mock = bulk_job_server("upsert", 0).await;
    let upsert = IngestOptions { external_id_field: Some("Id".into()), ..options(Operation::Upsert) };
    client(&mock, config(1)).bulk_ingest(&upsert, rows()).await.unwrap();
    assert!(ingest_paths(&mock).contains(&"GET successfulResults".to_owned()));
}
