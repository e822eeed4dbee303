//! sObject Collections: chunking at 200 (one API call per chunk), input-order results,
//! per-record `statusCode` errors and allOrNone.

use salesforce::{ErrorCode, SalesforceId};
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn create_many_chunks_at_200_and_keeps_input_order() {
    let org = Org::start().await;
    let client = org.client();
    client.identity().await.unwrap();
    let records: Vec<Value> = (0..450).map(|i| json!({"Name": format!("Bulk {i:03}")})).collect();

    let before = org.api_calls().await;
    let results = client.create_many("Account", &records, false).await.unwrap();
    assert_eq!(org.api_calls().await - before, 3, "450 records = 3 calls");

    assert_eq!(results.len(), 450);
    assert!(results.iter().all(|r| r.success && r.id.is_some()));
    let ids: Vec<SalesforceId> = results.iter().filter_map(|r| r.id.clone()).collect();
    let fetched: Vec<Option<Value>> = client.retrieve_many("Account", &ids, &["Name"]).await.unwrap();
    for (i, rec) in fetched.iter().enumerate() {
        assert_eq!(rec.as_ref().unwrap()["Name"], format!("Bulk {i:03}"));
    }
}

#[tokio::test]
async fn partial_failures_use_status_code_and_failed_creates_have_no_id() {
    let org = Org::start().await;
    let client = org.client();
    let records = vec![json!({"Name": "Good 1"}), json!({"Website": "missing-name.test"}), json!({"Name": "Good 2"})];
    let results = client.create_many("Account", &records, false).await.unwrap();
    assert!(results[0].success && results[2].success);
    assert!(!results[1].success);
    assert!(results[1].id.is_none());
    let e = results[1].first_error().unwrap();
    assert_eq!(e.status_code, ErrorCode::RequiredFieldMissing);
    assert_eq!(e.fields, vec!["Name"]);
    assert!(!e.retry_class().is_retryable());
}

#[tokio::test]
async fn all_or_none_rolls_back_the_chunk() {
    let org = Org::start().await;
    let client = org.client();
    let records = vec![json!({"Name": "Keep?"}), json!({"Website": "no name"})];
    let results = client.create_many("Account", &records, true).await.unwrap();
    assert!(results.iter().all(|r| !r.success));
    assert_eq!(results[0].first_error().unwrap().status_code, ErrorCode::AllOrNoneOperationRolledBack);
    assert_eq!(results[1].first_error().unwrap().status_code, ErrorCode::RequiredFieldMissing);
    assert!(results[0].first_error().unwrap().retry_class().is_retryable());
    let names: Vec<Value> = org.dump("Account").await.into_iter().map(|r| r["Name"].clone()).collect();
    assert!(!names.contains(&json!("Keep?")), "rolled back: {names:?}");
}

#[tokio::test]
async fn update_upsert_retrieve_delete_many() {
    let org = Org::start().await;
    let client = org.client();

    let upserts: Vec<Value> =
        (0..250).map(|i| json!({"Pendo_Account_Id__c": format!("ext-{i}"), "Name": format!("U{i}")})).collect();
    let first = client.upsert_many("Account", "Pendo_Account_Id__c", &upserts, false).await.unwrap();
    assert_eq!(first.len(), 250);
    assert!(first.iter().all(|r| r.success && r.created == Some(true)), "{:?}", first[0]);

    let again = client.upsert_many("Account", "Pendo_Account_Id__c", &upserts[..3], false).await.unwrap();
    assert!(again.iter().all(|r| r.success && r.created == Some(false)));
    assert_eq!(again[0].id, first[0].id);

    let ids: Vec<SalesforceId> = first.iter().filter_map(|r| r.id.clone()).collect();
    let updates: Vec<(SalesforceId, Value)> =
        ids.iter().take(201).map(|id| (id.clone(), json!({"Website": "updated.test"}))).collect();
    let updated = client.update_many("Account", &updates, false).await.unwrap();
    assert_eq!(updated.len(), 201);
    assert!(updated.iter().all(|r| r.success));

    let missing = SalesforceId::parse("001000000000009").unwrap();
    let probe = vec![ids[0].clone(), missing, ids[200].clone()];
    let fetched: Vec<Option<Value>> = client.retrieve_many("Account", &probe, &["Website"]).await.unwrap();
    assert_eq!(fetched[0].as_ref().unwrap()["Website"], "updated.test");
    assert!(fetched[1].is_none(), "missing record is null");
    assert_eq!(fetched[2].as_ref().unwrap()["Website"], "updated.test");

    let deleted = client.delete_many(&ids, false).await.unwrap();
    assert_eq!(deleted.len(), 250);
    assert!(deleted.iter().all(|r| r.success));
    let fetched: Vec<Option<Value>> = client.retrieve_many("Account", &ids[..2], &["Name"]).await.unwrap();
    assert!(fetched.iter().all(Option::is_none));
}

#[tokio::test]
async fn update_many_reports_malformed_and_missing_ids_per_record() {
    let org = Org::start().await;
    let client = org.client();
    let created = client.create("Account", &json!({"Name": "Real"})).await.unwrap();
    let missing = SalesforceId::parse("001000000000077").unwrap();
    let results = client
        .update_many(
            "Account",
            &[(created.id.clone(), json!({"Name": "Real 2"})), (missing, json!({"Name": "Ghost"}))],
            false,
        )
        .await
        .unwrap();
    assert!(results[0].success);
    assert!(!results[1].success);
    let code = &results[1].first_error().unwrap().status_code;
    assert!(
        matches!(
            code,
            ErrorCode::EntityIsDeleted
                | ErrorCode::NotFound
                | ErrorCode::InvalidCrossReferenceKey
                | ErrorCode::MalformedId
        ),
        "{code:?}"
    );
}

#[tokio::test]
async fn upsert_many_requires_the_external_id_in_every_record() {
    let org = Org::start().await;
    let client = org.client();
    let err =
        client.upsert_many("Account", "Pendo_Account_Id__c", &[json!({"Name": "no key"})], false).await.unwrap_err();
    assert!(matches!(err, salesforce::Error::InvalidInput(_)), "{err:?}");
}
