use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

fn accounts(n: usize, prefix: &str) -> Vec<Value> {
    (0..n).map(|i| json!({"attributes": {"type": "Account"}, "Name": format!("{prefix}{i}")})).collect()
}

#[tokio::test]
async fn create_update_delete_in_one_call_each() {
    let org = Org::start().await;
    let (s, v) = org
        .json(Method::POST, "composite/sobjects", Some(json!({"allOrNone": false, "records": accounts(200, "A")})))
        .await;
    assert_eq!(s, 200);
    let ids: Vec<String> = v.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 200);
    let updates: Vec<Value> =
        ids.iter().map(|id| json!({"attributes": {"type": "Account"}, "id": id, "Website": "x.com"})).collect();
    let (s, v) = org.json(Method::PATCH, "composite/sobjects", Some(json!({"records": updates}))).await;
    assert_eq!(s, 200);
    assert!(v.as_array().unwrap().iter().all(|r| r["success"] == json!(true)));
    let (s, v) = org.json(Method::DELETE, &format!("composite/sobjects?ids={}", ids[..3].join(",")), None).await;
    assert_eq!(s, 200);
    assert_eq!(v.as_array().unwrap().len(), 3);
    let usage = org.usage().await;
    assert_eq!(usage["byKind"]["collections"], json!(3), "each collections request counts once: {usage}");
}

#[tokio::test]
async fn more_than_200_records_is_refused() {
    let org = Org::start().await;
    let (s, v) = org.json(Method::POST, "composite/sobjects", Some(json!({"records": accounts(201, "A")}))).await;
    assert_eq!((s, code(&v)), (400, "EXCEEDED_ID_LIMIT"));
}

#[tokio::test]
async fn partial_failure_without_all_or_none() {
    let org = Org::start().await;
    let mut records = accounts(2, "ok");
    records.insert(1, json!({"attributes": {"type": "Account"}, "Website": "no-name.com"}));
    let (s, v) =
        org.json(Method::POST, "composite/sobjects", Some(json!({"allOrNone": false, "records": records}))).await;
    assert_eq!(s, 200);
    assert_eq!(v[0]["success"], json!(true));
    assert_eq!(v[1]["success"], json!(false));
    assert!(v[1].get("id").is_none(), "a failed create has no id: {v}");
    assert_eq!(v[1]["errors"][0]["statusCode"], json!("REQUIRED_FIELD_MISSING"));
    assert!(v[1]["errors"][0].get("errorCode").is_none());
    assert_eq!(v[2]["success"], json!(true));
}

#[tokio::test]
async fn all_or_none_rolls_back_everything() {
    let org = Org::start().await;
    let mut records = accounts(3, "ok");
    records.push(json!({"attributes": {"type": "Account"}, "Name": "x".repeat(300)}));
    let (s, v) =
        org.json(Method::POST, "composite/sobjects", Some(json!({"allOrNone": true, "records": records}))).await;
    assert_eq!(s, 200);
    for r in &v.as_array().unwrap()[..3] {
        assert_eq!(r["success"], json!(false));
        assert_eq!(r["errors"][0]["statusCode"], json!("ALL_OR_NONE_OPERATION_ROLLED_BACK"));
    }
    assert_eq!(v[3]["errors"][0]["statusCode"], json!("STRING_TOO_LONG"));
    let (_, dump) = org.admin(Method::GET, "records/Account", Value::Null).await;
    assert_eq!(dump, json!([]));
}

#[tokio::test]
async fn upsert_by_external_id_reports_created() {
    let org = Org::start().await;
    org.create("Account", json!({"Name": "Existing", "Pendo_Account_Id__c": "p1"})).await;
    let records = json!([
        {"attributes": {"type": "Account"}, "Pendo_Account_Id__c": "p1", "Name": "Updated"},
        {"attributes": {"type": "Account"}, "Pendo_Account_Id__c": "p2", "Name": "New"},
        {"attributes": {"type": "Account"}, "Name": "No key"},
    ]);
    let (s, v) = org
        .json(
            Method::PATCH,
            "composite/sobjects/Account/Pendo_Account_Id__c",
            Some(json!({"allOrNone": false, "records": records})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!((v[0]["success"].clone(), v[0]["created"].clone()), (json!(true), json!(false)));
    assert_eq!((v[1]["success"].clone(), v[1]["created"].clone()), (json!(true), json!(true)));
    assert_eq!(v[2]["success"], json!(false));
}

#[tokio::test]
async fn update_errors_name_the_record() {
    let org = Org::start().await;
    let records = json!([{"attributes": {"type": "Contact"}, "id": "001xx000003DGb2999", "LastName": "x"}, {"attributes": {"type": "Contact"}, "LastName": "y"}]);
    let (_, v) = org.json(Method::PATCH, "composite/sobjects", Some(json!({"records": records}))).await;
    assert_eq!(v[0]["errors"][0]["statusCode"], json!("MALFORMED_ID"));
    assert_eq!(v[0]["errors"][0]["message"], json!("Contact ID: id value of incorrect type: 001xx000003DGb2999"));
    assert_eq!(v[1]["errors"][0]["statusCode"], json!("MISSING_ARGUMENT"));
}

#[tokio::test]
async fn retrieve_returns_null_for_missing() {
    let org = Org::start().await;
    let a = org.create("Account", json!({"Name": "A"})).await;
    let (s, v) = org
        .json(Method::GET, &format!("composite/sobjects/Account?ids={a},001000000000009AAA&fields=Id,Name"), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(v[0]["Name"], json!("A"));
    assert_eq!(v[1], Value::Null);
    let (s, v) = org
        .json(Method::POST, "composite/sobjects/Account", Some(json!({"ids": [a], "fields": ["Name", "Nope__c"]})))
        .await;
    assert_eq!((s, code(&v)), (400, "INVALID_FIELD"));
}

#[tokio::test]
async fn lock_faults_hit_single_records() {
    let org = Org::start().await;
    org.admin(Method::PUT, "faults", json!({"seed": 11, "unableToLockRow": 0.5})).await;
    let (_, v) = org.json(Method::POST, "composite/sobjects", Some(json!({"records": accounts(40, "L")}))).await;
    let locked =
        v.as_array().unwrap().iter().filter(|r| r["errors"][0]["statusCode"] == json!("UNABLE_TO_LOCK_ROW")).count();
    assert!(locked > 5 && locked < 35, "{locked}");
}
