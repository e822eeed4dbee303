//! Composite: references between subrequests, typed subresponses and allOrNone rollback.

use salesforce::ErrorCode;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn create_with_references_then_read_back() {
    let org = Org::start().await;
    let client = org.client();
    let mut req = client.composite_request(true);
    req.create("newAcct", "Account", json!({"Name": "Composite Co"})).unwrap();
    req.create("newContact", "Contact", json!({"LastName": "Ref", "AccountId": "@{newAcct.id}"})).unwrap();
    req.get("readBack", "Contact", "@{newContact.id}", Some(&["AccountId", "LastName"])).unwrap();
    let results = client.composite(&req).await.unwrap();
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|r| r.is_success()), "{results:?}");
    assert_eq!(results[0].http_status_code, 201);
    assert_eq!(results[0].reference_id.as_deref(), Some("newAcct"));
    let account_id = results[0].body["id"].as_str().unwrap();
    assert_eq!(results[2].body["AccountId"], account_id);
    assert!(
        results[0].http_headers.get("Location").is_some_and(|l| l.ends_with(account_id)),
        "{:?}",
        results[0].http_headers
    );
}

#[tokio::test]
async fn all_or_none_failure_halts_and_rolls_back() {
    let org = Org::start().await;
    let client = org.client();
    let mut req = client.composite_request(true);
    req.create("good", "Account", json!({"Name": "Rolled back"})).unwrap();
    req.create("bad", "Account", json!({"Website": "no name"})).unwrap();
    let results = client.composite(&req).await.unwrap();
    assert_eq!(results[1].http_status_code, 400);
    assert_eq!(results[1].errors()[0].error_code, ErrorCode::RequiredFieldMissing);
    assert!(!results[0].is_success());
    assert_eq!(results[0].errors()[0].error_code, ErrorCode::ProcessingHalted);
    let names: Vec<_> = org.dump("Account").await.into_iter().map(|r| r["Name"].clone()).collect();
    assert!(!names.contains(&json!("Rolled back")), "{names:?}");
}

#[tokio::test]
async fn too_many_subrequests_are_refused_locally() {
    let org = Org::start().await;
    let client = org.client();
    let mut req = client.composite_request(false);
    for i in 0..26 {
        req.query(&format!("q{i}"), "SELECT Id FROM Account");
    }
    let err = client.composite(&req).await.unwrap_err();
    assert!(matches!(err, salesforce::Error::InvalidInput(_)), "{err:?}");
}
