use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

fn sub(method: &str, url: &str, reference: &str, body: Option<Value>) -> Value {
    let mut v = json!({"method": method, "url": format!("/services/data/{V}/{url}"), "referenceId": reference});
    if let Some(b) = body {
        v["body"] = b;
    }
    v
}

#[tokio::test]
async fn references_flow_between_subrequests_and_count_once() {
    let org = Org::start().await;
    let body = json!({"allOrNone": true, "compositeRequest": [
        sub("POST", "sobjects/Account", "acct", Some(json!({"Name": "Acme"}))),
        sub("POST", "sobjects/Contact", "c", Some(json!({"LastName": "Doe", "AccountId": "@{acct.id}"}))),
        sub("GET", "sobjects/Contact/@{c.id}?fields=AccountId", "get", None),
    ]});
    let (s, v) = org.json(Method::POST, "composite", Some(body)).await;
    assert_eq!(s, 200, "{v}");
    let r = &v["compositeResponse"];
    assert_eq!(r[0]["httpStatusCode"], json!(201));
    assert!(r[0]["httpHeaders"]["Location"].as_str().unwrap().contains("/sobjects/Account/001"));
    assert_eq!(r[2]["body"]["AccountId"], r[0]["body"]["id"]);
    assert_eq!(org.usage().await["dailyApiRequests"]["Used"], json!(1));
}

#[tokio::test]
async fn all_or_none_halts_and_rolls_back() {
    let org = Org::start().await;
    let body = json!({"allOrNone": true, "compositeRequest": [
        sub("POST", "sobjects/Account", "a", Some(json!({"Name": "Kept?"}))),
        sub("POST", "sobjects/Account", "b", Some(json!({"Nope__c": 1}))),
        sub("POST", "sobjects/Account", "c", Some(json!({"Name": "Never"}))),
    ]});
    let (_, v) = org.json(Method::POST, "composite", Some(body)).await;
    let r = &v["compositeResponse"];
    assert_eq!(r[0]["httpStatusCode"], json!(400));
    assert_eq!(r[0]["body"][0]["errorCode"], json!("PROCESSING_HALTED"));
    assert_eq!(r[1]["body"][0]["errorCode"], json!("INVALID_FIELD"));
    assert_eq!(r[2]["body"][0]["errorCode"], json!("PROCESSING_HALTED"));
    let (_, dump) = org.admin(Method::GET, "records/Account", Value::Null).await;
    assert_eq!(dump, json!([]));
}

#[tokio::test]
async fn without_all_or_none_only_dependents_are_skipped() {
    let org = Org::start().await;
    let body = json!({"allOrNone": false, "compositeRequest": [
        sub("POST", "sobjects/Account", "bad", Some(json!({"Website": "x"}))),
        sub("POST", "sobjects/Contact", "dep", Some(json!({"LastName": "D", "AccountId": "@{bad.id}"}))),
        sub("POST", "sobjects/Account", "fine", Some(json!({"Name": "Fine"}))),
    ]});
    let (_, v) = org.json(Method::POST, "composite", Some(body)).await;
    let r = &v["compositeResponse"];
    assert_eq!(r[0]["body"][0]["errorCode"], json!("REQUIRED_FIELD_MISSING"));
    assert_eq!(r[1]["body"][0]["errorCode"], json!("PROCESSING_HALTED"));
    assert!(r[1]["body"][0]["message"].as_str().unwrap().contains("bad.id"));
    assert_eq!(r[2]["httpStatusCode"], json!(201));
}

#[tokio::test]
async fn malformed_composite_requests() {
    let org = Org::start().await;
    let too_many: Vec<Value> = (0..26).map(|i| sub("GET", "limits", &format!("r{i}"), None)).collect();
    let (s, _) = org.json(Method::POST, "composite", Some(json!({"compositeRequest": too_many}))).await;
    assert_eq!(s, 400);
    let (s, v) = org
        .json(Method::POST, "composite", Some(json!({"compositeRequest": [sub("GET", "limits", "_bad", None)]})))
        .await;
    assert_eq!((s, code(&v)), (400, "JSON_PARSER_ERROR"));
    let (s, v) = org.json(Method::POST, "composite", Some(json!({"nope": true}))).await;
    assert_eq!((s, code(&v)), (400, "JSON_PARSER_ERROR"));
}
