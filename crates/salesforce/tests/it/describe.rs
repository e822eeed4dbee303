//! Versions, describe (global and per object, cached), getUpdated and getDeleted.

use chrono::{Duration, Utc};
use futures_util::TryStreamExt;
use salesforce::{QueryOptions, QueryPage};
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

#[tokio::test]
async fn a_first_page_and_a_describe_cost_one_call_and_the_pages_go_on() {
    let org = Org::start().await;
    let client = org.client();
    let rows: Vec<_> = (0..450).map(|i| json!({"Name": format!("Acct {i:03}")})).collect();
    org.seed("Account", json!(rows)).await;
    client.identity().await.unwrap();
    let since = std::time::Instant::now();
    assert!(client.describe_fetched_since("Account", since).is_none());

    let before = org.api_calls().await;
    let options = QueryOptions { batch_size: Some(200), include_deleted: false };
    let soql = "SELECT Id, Name FROM Account ORDER BY Name";
    let first: QueryPage<serde_json::Value> =
        client.query_first_page_describing(soql, options, "Account").await.unwrap();
    assert_eq!(org.api_calls().await, before + 1, "the page and the describe are one Composite call");
    assert_eq!((first.total_size, first.done), (450, false));
    let described = client.describe_fetched_since("Account", since).expect("the describe came with the page");
    assert!(described.field("Pendo_Account_Id__c").is_some());
    assert!(client.describe_fetched_since("Account", std::time::Instant::now()).is_none(), "older than a later start");

    let rest: Vec<QueryPage<serde_json::Value>> = client.query_pages_after(&first).try_collect().await.unwrap();
    let mut names: Vec<String> = first
        .records
        .iter()
        .chain(rest.iter().flat_map(|p| &p.records))
        .map(|r| r["Name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 450);
    names.dedup();
    assert_eq!(names.len(), 450, "no row twice");
    assert_eq!(org.api_calls().await, before + 1 + rest.len() as u64);

    // A query Salesforce refuses is the query's error, as its own request's would be; a
    // describe of an object the org lacks is not.
    let err = client
        .query_first_page_describing::<serde_json::Value>("SELECT Nope FROM Account", options, "Account")
        .await
        .unwrap_err();
    assert_eq!(api(&err).status.as_u16(), 400);
    let page: QueryPage<serde_json::Value> =
        client.query_first_page_describing("SELECT Id FROM Account LIMIT 1", options, "Nope__c").await.unwrap();
    assert_eq!(page.records.len(), 1);
    assert!(client.describe_fetched_since("Nope__c", since).is_none());
}
