//! `/limits`, live `Sforce-Limit-Info` tracking and REQUEST_LIMIT_EXCEEDED.

use salesforce::{ErrorCode, RetryClass};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn limits_are_typed_and_usage_is_tracked() {
    let org = Org::start().await;
    let client = org.client();
    assert!(client.api_usage().is_none());
    let limits = client.limits().await.unwrap();
    let daily = limits.daily_api_requests().unwrap();
    assert_eq!(daily.max, 100_000);
    assert!(limits.daily_bulk_api_batches().is_some());

    let first = client.api_usage().unwrap().info.api_usage.unwrap();
    assert_eq!(first.max, 100_000);
    client.create("Account", &json!({"Name": "Counted"})).await.unwrap();
    let second = client.api_usage().unwrap().info.api_usage.unwrap();
    assert_eq!(second.used, first.used + 1);
}

#[tokio::test]
async fn requests_sent_matches_what_the_org_counted() {
    let org = Org::start().await;
    let client = org.client();
    assert_eq!(client.requests_sent(), 0);
    let before = client.limits().await.unwrap().daily_api_requests().unwrap().used();
    let records: Vec<_> = (0..450).map(|i| json!({"Name": format!("Sent {i}")})).collect();
    client.create_many("Account", &records, false).await.unwrap();
    let after = client.limits().await.unwrap().daily_api_requests().unwrap().used();
    // The token request is not an API call; /limits twice and 3 Collections calls are.
    assert_eq!(client.requests_sent(), 5);
    assert_eq!(after - before, 4, "the org counts the first /limits before answering");
    assert_eq!(client.clone().requests_sent(), 5, "clones share the counter");
}

#[tokio::test]
async fn daily_limit_exhaustion_is_not_retried() {
    let org = Org::start().await;
    let client = org.client_with(salesforce::ApiVersion::DEFAULT, 5);
    client.limits().await.unwrap();
    org.set_limits(json!({"DailyApiRequests": {"Max": 10, "Remaining": 0}})).await;

    let err = client.create("Account", &json!({"Name": "Over budget"})).await.unwrap_err();
    let e = api(&err);
    assert_eq!(e.status.as_u16(), 403);
    assert_eq!(e.error_code, ErrorCode::RequestLimitExceeded);
    assert_eq!(e.message, "TotalRequests Limit exceeded.");
    assert_eq!(err.retry_class(), RetryClass::NotNow);
    assert!(!err.is_retryable());
    assert!(!err.may_have_committed());
    let usage = client.api_usage().unwrap().info.api_usage.unwrap();
    assert_eq!(usage.remaining(), 0, "the 403 carried Sforce-Limit-Info too");
}
