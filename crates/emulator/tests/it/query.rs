use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

async fn seed_accounts(org: &Org, n: usize) {
    let records: Vec<Value> = (0..n).map(|i| json!({"Name": format!("Acct {i:05}"), "NumberOfEmployees": i})).collect();
    let (s, v) = org.admin(Method::POST, "records/Account", Value::Array(records)).await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn pages_past_2000_rows_through_next_records_url() {
    let org = Org::start().await;
    seed_accounts(&org, 2500).await;
    let q = "query?q=SELECT+Id,+Name+FROM+Account+ORDER+BY+Name";
    let (s, first) = org.json(Method::GET, q, None).await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(first["totalSize"], json!(2500));
    assert_eq!(first["done"], json!(false));
    assert_eq!(first["records"].as_array().unwrap().len(), 2000);
    let next = first["nextRecordsUrl"].as_str().unwrap();
    assert!(next.starts_with(&format!("/services/data/{V}/query/01g")), "{next}");
    assert!(next.ends_with("-2000"));
    // The locator is served under /queryAll/ too, as jsforce and simple-salesforce differ.
    let locator = next.rsplit('/').next().unwrap();
    let (s, second) = org.json(Method::GET, &format!("queryAll/{locator}"), None).await;
    assert_eq!(s, 200);
    assert_eq!(second["done"], json!(true));
    assert!(second.get("nextRecordsUrl").is_none());
    assert_eq!(second["records"].as_array().unwrap().len(), 500);
    assert_eq!(second["records"][499]["Name"], json!("Acct 02499"));
    // A page may be read again after a failure.
    let (s, _) = org.json(Method::GET, &format!("query/{locator}"), None).await;
    assert_eq!(s, 200);
    assert_eq!(org.usage().await["byKind"]["query"], json!(3));
}

#[tokio::test]
async fn batch_size_header_is_honoured_within_bounds() {
    let org = Org::start().await;
    seed_accounts(&org, 450).await;
    let resp = org
        .http
        .get(org.url("query/?q=SELECT+Id+FROM+Account"))
        .bearer_auth(&org.token)
        .header("Sforce-Query-Options", "batchSize=50")
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    // 50 is below Salesforce's minimum of 200.
    assert_eq!(v["records"].as_array().unwrap().len(), 200);
}

#[tokio::test]
async fn query_all_sees_deleted_rows_and_parents_nest() {
    let org = Org::start().await;
    let a = org.create("Account", json!({"Name": "Parent"})).await;
    let c = org.create("Contact", json!({"LastName": "Kid", "AccountId": a})).await;
    org.create("Contact", json!({"LastName": "Orphan"})).await;
    org.call(Method::DELETE, &format!("sobjects/Contact/{c}"), None).await;
    let (_, v) = org.json(Method::GET, "query?q=SELECT+LastName,+Account.Name,+Owner.Email+FROM+Contact", None).await;
    assert_eq!(v["totalSize"], json!(1));
    assert_eq!(v["records"][0]["Account"], Value::Null);
    assert_eq!(v["records"][0]["Owner"]["Email"], json!("integration@usagesync.test"));
    let (_, v) = org
        .json(Method::GET, "queryAll?q=SELECT+LastName,+IsDeleted,+Account.Name+FROM+Contact+ORDER+BY+LastName", None)
        .await;
    assert_eq!(v["totalSize"], json!(2));
    assert_eq!(v["records"][0]["Account"]["Name"], json!("Parent"));
    assert_eq!(v["records"][0]["Account"]["attributes"]["type"], json!("Account"));
    assert_eq!(v["records"][0]["IsDeleted"], json!(true));
    let (_, v) = org.json(Method::GET, "query?q=SELECT+COUNT()+FROM+Contact", None).await;
    assert_eq!(v, json!({"totalSize": 1, "done": true, "records": []}));
}

#[tokio::test]
async fn query_errors_are_salesforce_shaped() {
    let org = Org::start().await;
    for (q, expected) in [
        ("SELECT+Nope__c+FROM+Account", "INVALID_FIELD"),
        ("SELECT+Id+FROM+Nope__c", "INVALID_TYPE"),
        ("SELECT+Id+FROM+Account+WHERE", "MALFORMED_QUERY"),
        ("SELECT+Id+FROM+Account+GROUP+BY+Name", "MALFORMED_QUERY"),
    ] {
        let (s, v) = org.json(Method::GET, &format!("query?q={q}"), None).await;
        assert_eq!((s, code(&v)), (400, expected), "{q}: {v}");
        assert!(v[0]["message"].as_str().unwrap().len() > 10);
    }
    let (s, v) = org.json(Method::GET, "query", None).await;
    assert_eq!((s, code(&v)), (400, "MALFORMED_QUERY"));
    let (s, v) = org.json(Method::GET, "query/01gBOGUS-2000", None).await;
    assert_eq!((s, code(&v)), (400, "INVALID_QUERY_LOCATOR"));
}
