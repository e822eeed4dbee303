//! Versions, describe (global and per object, cached), getUpdated and getDeleted.

use chrono::{Duration, Utc};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn versions_are_listed_without_counting() {
    let org = Org::start().await;
    let client = org.client();
    client.identity().await.unwrap();
    let before = org.api_calls().await;
    let versions = client.versions().await.unwrap();
    assert!(versions.iter().any(|v| v.version == "62.0" && v.url == "/services/data/v62.0"));
    assert_eq!(org.api_calls().await, before, "Versions is free");
}

#[tokio::test]
async fn describes_are_typed_and_cached() {
    let org = Org::start().await;
    let client = org.client();
    let global = client.describe_global().await.unwrap();
    assert_eq!(global.sobject("account").unwrap().key_prefix.as_deref(), Some("001"));

    let d = client.describe("Account").await.unwrap();
    assert_eq!(d.name, "Account");
    let ext = d.field("Pendo_Account_Id__c").unwrap();
    assert!(ext.external_id);
    assert_eq!(d.field("Name").unwrap().field_type, "string");

    let before = org.api_calls().await;
    let again = client.describe("account").await.unwrap();
    assert!(std::sync::Arc::ptr_eq(&d, &again));
    client.describe_global().await.unwrap();
    assert_eq!(org.api_calls().await, before, "served from cache");

    client.clear_describe_cache();
    client.describe("Account").await.unwrap();
    assert_eq!(org.api_calls().await, before + 1);

    let err = client.describe("Nope__c").await.unwrap_err();
    assert_eq!(api(&err).status.as_u16(), 404);
}

#[tokio::test]
async fn get_updated_and_get_deleted() {
    let org = Org::start().await;
    let client = org.client();
    let kept = client.create("Account", &json!({"Name": "Changed"})).await.unwrap();
    let gone = client.create("Account", &json!({"Name": "Deleted"})).await.unwrap();
    client.delete("Account", &gone.id).await.unwrap();
    // getUpdated covers whole minutes up to "now"; let the current minute close.
    org.advance_clock(120).await;

    let start = Utc::now() - Duration::hours(1);
    let end = Utc::now() + Duration::minutes(1);
    let updated = client.get_updated("Account", start, end).await.unwrap();
    assert!(updated.ids.contains(&kept.id), "{updated:?}");
    let deleted = client.get_deleted("Account", start, end).await.unwrap();
    assert!(deleted.deleted_records.iter().any(|d| d.id == gone.id), "{deleted:?}");
    assert!(deleted.earliest_date_available <= deleted.latest_date_covered);
}
