//! Fault injection: 503 and UNABLE_TO_LOCK_ROW are retried with backoff; dropped connections
//! are retried for idempotent calls but never for creates.

use salesforce::{Error, ErrorCode, RetryClass};
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn server_unavailable_is_retried_until_it_clears() {
    let org = Org::start().await;
    let client = org.client();
    let created = client.create("Account", &json!({"Name": "Flaky"})).await.unwrap();

    org.seed_with_pattern(json!({"serverUnavailable": 0.5}), &[false, false, true]).await;
    let got: Value = client.get("Account", &created.id, None).await.unwrap();
    assert_eq!(got["Name"], "Flaky");
}

#[tokio::test]
async fn server_unavailable_that_persists_surfaces_as_backoff() {
    let org = Org::start().await;
    let client = org.client();
    client.identity().await.unwrap();
    org.set_faults(json!({"serverUnavailable": 1.0})).await;
    let err = client.limits().await.unwrap_err();
    let e = api(&err);
    assert_eq!(e.status.as_u16(), 503);
    assert_eq!(e.error_code, ErrorCode::ServerUnavailable);
    assert_eq!(err.retry_class(), RetryClass::Backoff);
    assert!(!err.may_have_committed());
}

#[tokio::test]
async fn creates_are_retried_after_503_because_nothing_was_written() {
    let org = Org::start().await;
    let client = org.client();
    client.identity().await.unwrap();
    org.seed_with_pattern(json!({"serverUnavailable": 0.5}), &[false, true]).await;
    client.create("Account", &json!({"Name": "Once"})).await.unwrap();
    org.clear_faults().await;
    let once = org.dump("Account").await.into_iter().filter(|r| r["Name"] == "Once").count();
    assert_eq!(once, 1);
}

#[tokio::test]
async fn lock_contention_is_retried_for_updates_and_creates() {
    let org = Org::start().await;
    let client = org.client_with(salesforce::ApiVersion::DEFAULT, 25);
    let created = client.create("Account", &json!({"Name": "Locked"})).await.unwrap();
    org.set_faults(json!({"seed": 11, "unableToLockRow": 0.5})).await;
    for i in 0..20 {
        client.update("Account", &created.id, &json!({"Website": format!("v{i}.test")})).await.unwrap();
        client.create("Account", &json!({"Name": format!("Lock create {i}")})).await.unwrap();
    }
    org.clear_faults().await;
    let creates = org
        .dump("Account")
        .await
        .into_iter()
        .filter(|r| r["Name"].as_str().is_some_and(|n| n.starts_with("Lock create")))
        .count();
    assert_eq!(creates, 20, "each create committed exactly once");
}

#[tokio::test]
async fn persistent_lock_contention_is_a_retryable_error() {
    let org = Org::start().await;
    let client = org.client();
    let created = client.create("Account", &json!({"Name": "Stuck"})).await.unwrap();
    org.set_faults(json!({"unableToLockRow": 1.0})).await;
    let err = client.update("Account", &created.id, &json!({"Website": "x.test"})).await.unwrap_err();
    let e = api(&err);
    assert_eq!(e.error_code, ErrorCode::UnableToLockRow);
    assert_eq!(err.retry_class(), RetryClass::Backoff);
}

#[tokio::test]
async fn lock_contention_inside_collections_is_per_record() {
    let org = Org::start().await;
    let client = org.client();
    org.set_faults(json!({"unableToLockRow": 1.0})).await;
    let records: Vec<Value> = (0..3).map(|i| json!({"Name": format!("C{i}")})).collect();
    let results = client.create_many("Account", &records, false).await.unwrap();
    assert!(results.iter().all(|r| !r.success));
    let e = results[0].first_error().unwrap();
    assert_eq!(e.status_code, ErrorCode::UnableToLockRow);
    assert_eq!(e.retry_class(), RetryClass::Backoff);
}

#[tokio::test]
async fn dropped_connections_are_retried_for_reads_and_upserts() {
    let org = Org::start().await;
    let client = org.client();
    let created = client.create("Account", &json!({"Name": "Dropped"})).await.unwrap();

    org.seed_with_pattern(json!({"dropConnection": 0.5}), &[false, true]).await;
    let got: Value = client.get("Account", &created.id, None).await.unwrap();
    assert_eq!(got["Name"], "Dropped");

    org.seed_with_pattern(json!({"dropConnection": 0.5}), &[false, true]).await;
    let up = client.upsert("Account", "Pendo_Account_Id__c", "drop-1", &json!({"Name": "Up"})).await.unwrap();
    assert!(up.created);
}

#[tokio::test]
async fn dropped_connection_on_create_is_not_retried() {
    let org = Org::start().await;
    let client = org.client_with(salesforce::ApiVersion::DEFAULT, 5);
    client.identity().await.unwrap();
    // The second attempt would succeed, so success here would prove a blind re-send.
    org.seed_with_pattern(json!({"dropConnection": 0.5}), &[false, true]).await;
    let err = client.create("Account", &json!({"Name": "Maybe"})).await.unwrap_err();
    match &err {
        Error::Transport { may_have_reached_server, .. } => assert!(*may_have_reached_server),
        other => panic!("expected a transport error, got {other:?}"),
    }
    assert!(err.may_have_committed());
    assert_eq!(err.retry_class(), RetryClass::Backoff);

    // The same holds for a Collections create and a Composite request with a create.
    org.seed_with_pattern(json!({"dropConnection": 0.5}), &[false, true]).await;
    let err = client.create_many("Account", &[json!({"Name": "Maybe many"})], false).await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");

    org.seed_with_pattern(json!({"dropConnection": 0.5}), &[false, true]).await;
    let mut req = client.composite_request(false);
    req.create("a", "Account", json!({"Name": "Maybe composite"})).unwrap();
    let err = client.composite(&req).await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
}

#[tokio::test]
async fn chunk_failure_after_progress_keeps_completed_results() {
    let org = Org::start().await;
    let client = org.client_with(salesforce::ApiVersion::DEFAULT, 1);
    client.identity().await.unwrap();
    org.seed_with_pattern(json!({"serverUnavailable": 0.5}), &[true, false]).await;
    let records: Vec<Value> = (0..250).map(|i| json!({"Name": format!("P{i}")})).collect();
    let err = client.create_many("Account", &records, false).await.unwrap_err();
    match &err {
        Error::Partial { completed, failed_offset, source } => {
            assert_eq!(completed.len(), 200);
            assert_eq!(*failed_offset, 200);
            assert_eq!(source.error_code(), Some(&ErrorCode::ServerUnavailable));
        }
        other => panic!("expected Partial, got {other:?}"),
    }
    assert_eq!(err.retry_class(), RetryClass::Backoff);
}
