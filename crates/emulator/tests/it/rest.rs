use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;
use emulator::salesforce::Config;

#[tokio::test]
async fn versions_need_no_session_and_are_free() {
    let org = Org::start().await;
    let v: Value =
        org.http.get(format!("{}/services/data/", org.emu.base_url)).send().await.unwrap().json().await.unwrap();
    let last = v.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["version"], json!("66.0"));
    assert_eq!(last["url"], json!("/services/data/v66.0"));
    assert_eq!(org.usage().await["dailyApiRequests"]["Used"], json!(0));
}

#[tokio::test]
async fn crud_round_trip_with_limit_info_and_system_fields() {
    let org = Org::start().await;
    let resp = org.call(Method::POST, "sobjects/Account/", Some(json!({"Name": "Acme", "Website": "acme.com"}))).await;
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(resp.headers()["sforce-limit-info"], "api-usage=1/100000");
    let created: Value = resp.json().await.unwrap();
    assert_eq!(created["success"], json!(true));
    assert_eq!(created["errors"], json!([]));
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 18);

    // 15-character IDs are accepted.
    let (status, rec) = org.json(Method::GET, &format!("sobjects/account/{}", &id[..15]), None).await;
    assert_eq!(status, 200);
    assert_eq!(rec["attributes"]["type"], json!("Account"));
    assert_eq!(rec["attributes"]["url"], json!(format!("/services/data/{V}/sobjects/Account/{id}")));
    assert_eq!(rec["Name"], json!("Acme"));
    assert!(rec["SystemModstamp"].as_str().unwrap().ends_with("+0000"));
    assert!(rec["OwnerId"].as_str().unwrap().starts_with("005"));

    let (status, rec) = org.json(Method::GET, &format!("sobjects/Account/{id}?fields=Name,Website"), None).await;
    assert_eq!(status, 200);
    assert_eq!(rec.as_object().unwrap().len(), 3, "{rec}");

    let resp = org.call(Method::PATCH, &format!("sobjects/Account/{id}"), Some(json!({"Website": "acme.io"}))).await;
    assert_eq!(resp.status().as_u16(), 204);
    let resp = org.call(Method::DELETE, &format!("sobjects/Account/{id}"), None).await;
    assert_eq!(resp.status().as_u16(), 204);
    let (status, v) = org.json(Method::GET, &format!("sobjects/Account/{id}"), None).await;
    assert_eq!((status, code(&v)), (404, "NOT_FOUND"));
    let (status, v) = org.json(Method::PATCH, &format!("sobjects/Account/{id}"), Some(json!({"Name": "x"}))).await;
    assert_eq!((status, code(&v)), (404, "ENTITY_IS_DELETED"));
}

#[tokio::test]
async fn upsert_status_codes_depend_on_version() {
    let org = Org::start().await;
    let path = "sobjects/Account/Pendo_Account_Id__c/acme%2F1";
    let (status, v) = org.json(Method::PATCH, path, Some(json!({"Name": "Acme"}))).await;
    assert_eq!(status, 201);
    assert_eq!(v["created"], json!(true));
    let (status, v) = org.json(Method::PATCH, path, Some(json!({"Name": "Acme 2"}))).await;
    assert_eq!(status, 200);
    assert_eq!(v["created"], json!(false));
    // Before v46.0 an upsert that updates answers 204 with no body.
    let resp = org
        .http
        .patch(format!("{}/services/data/v45.0/{path}", org.emu.base_url))
        .bearer_auth(&org.token)
        .json(&json!({"Name": "Acme 3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    // The external ID value was stored decoded.
    let (_, rec) = org.json(Method::GET, path, None).await;
    assert_eq!(rec["Pendo_Account_Id__c"], json!("acme/1"));
    assert_eq!(rec["Name"], json!("Acme 3"));
}

#[tokio::test]
async fn upsert_multiple_matches_answers_300_with_urls() {
    let org = Org::start().await;
    org.admin(Method::POST, "fields/Account", json!({"name": "Legacy_Key__c", "type": "string", "externalId": true}))
        .await;
    org.create("Account", json!({"Name": "A", "Legacy_Key__c": "dup"})).await;
    org.create("Account", json!({"Name": "B", "Legacy_Key__c": "dup"})).await;
    let (status, v) = org.json(Method::PATCH, "sobjects/Account/Legacy_Key__c/dup", Some(json!({"Name": "C"}))).await;
    assert_eq!(status, 300);
    let urls = v.as_array().unwrap();
    assert_eq!(urls.len(), 2);
    assert!(urls[0].as_str().unwrap().starts_with(&format!("/services/data/{V}/sobjects/Account/001")));
}

#[tokio::test]
async fn each_error_code_in_its_documented_shape() {
    let org = Org::start().await;
    org.create("Account", json!({"Name": "A", "Pendo_Account_Id__c": "taken"})).await;
    let cases = vec![
        ("sobjects/Account", json!({"Name": "x", "Nope__c": 1}), 400, "INVALID_FIELD"),
        ("sobjects/Opportunity", json!({"Name": "x"}), 400, "REQUIRED_FIELD_MISSING"),
        ("sobjects/Contact", json!({"LastName": "x", "AccountId": "garbage"}), 400, "MALFORMED_ID"),
        (
            "sobjects/Contact",
            json!({"LastName": "x", "AccountId": "001000000000009AAA"}),
            400,
            "INVALID_CROSS_REFERENCE_KEY",
        ),
        ("sobjects/Account", json!({"Name": "B", "Pendo_Account_Id__c": "TAKEN"}), 400, "DUPLICATE_VALUE"),
        ("sobjects/Account", json!({"Name": "x".repeat(300)}), 400, "STRING_TOO_LONG"),
        ("sobjects/Account", json!({"Name": "x", "NumberOfEmployees": "many"}), 400, "JSON_PARSER_ERROR"),
        ("sobjects/Task", json!({"Status": "Bogus"}), 400, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        (
            "sobjects/Account",
            json!({"Name": "x", "CreatedDate": "2020-01-01T00:00:00Z"}),
            400,
            "INVALID_FIELD_FOR_INSERT_UPDATE",
        ),
        ("sobjects/Nope__c", json!({"Name": "x"}), 404, "NOT_FOUND"),
    ];
    for (path, body, status, expected) in cases {
        let (s, v) = org.json(Method::POST, path, Some(body.clone())).await;
        assert_eq!((s, code(&v)), (status, expected), "{path} {body} → {v}");
        assert!(v[0]["message"].is_string());
    }
    let (s, v) = org.json(Method::PATCH, "sobjects/Account/001000000000009AAA", Some(json!({"Name": "x"}))).await;
    assert_eq!((s, code(&v)), (404, "NOT_FOUND"));
    let (s, v) = org.json(Method::GET, "sobjects/Account/not-an-id", None).await;
    assert_eq!((s, code(&v)), (404, "NOT_FOUND"));
    // Malformed JSON changes nothing.
    let resp = org
        .http
        .post(org.url("sobjects/Account"))
        .bearer_auth(&org.token)
        .header("content-type", "application/json")
        .body("{\"Name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(code(&v), "JSON_PARSER_ERROR");
    let (_, dump) = org.admin(Method::GET, "records/Account", Value::Null).await;
    assert_eq!(dump.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn validation_rules_answer_custom_validation_exception() {
    let org = Org::start().await;
    let (s, _) = org
        .admin(
            Method::POST,
            "validation-rules/Opportunity",
            json!({"name": "NoNegative", "errorMessage": "Amount must not be negative", "errorField": "Amount",
                   "condition": {"field": "Amount", "operator": "lessThan", "value": 0}}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = org
        .json(
            Method::POST,
            "sobjects/Opportunity",
            Some(json!({"Name": "x", "StageName": "Prospecting", "CloseDate": "2026-12-01", "Amount": -5})),
        )
        .await;
    assert_eq!((s, code(&v)), (400, "FIELD_CUSTOM_VALIDATION_EXCEPTION"));
    assert_eq!(v[0]["fields"], json!(["Amount"]));
}

#[tokio::test]
async fn field_updates_change_the_saved_value_in_the_writers_save() {
    let org = Org::start().await;
    let (s, _) = org
        .admin(
            Method::POST,
            "field-updates/Account",
            json!({"name": "CapEmployees", "when": {"field": "NumberOfEmployees", "operator": "greaterThan", "value": 100},
                   "field": "NumberOfEmployees", "value": 100}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) =
        org.json(Method::POST, "sobjects/Account", Some(json!({"Name": "big", "NumberOfEmployees": 500}))).await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let (_, rec) = org.json(Method::GET, &format!("sobjects/Account/{id}"), None).await;
    assert_eq!(rec["NumberOfEmployees"], json!(100), "the update applies on create");
    assert_eq!(rec["LastModifiedById"], rec["CreatedById"], "the save stays the writer's");
    org.json(Method::PATCH, &format!("sobjects/Account/{id}"), Some(json!({"NumberOfEmployees": 50}))).await;
    let (_, rec) = org.json(Method::GET, &format!("sobjects/Account/{id}"), None).await;
    assert_eq!(rec["NumberOfEmployees"], json!(50), "not when the condition does not hold");
    // A field the object lacks, or a value its type refuses, is turned away.
    let (s, _) =
        org.admin(Method::POST, "field-updates/Account", json!({"name": "x", "field": "Nope__c", "value": 1})).await;
    assert_eq!(s, 400);
    let (s, _) = org
        .admin(
            Method::POST,
            "field-updates/Account",
            json!({"name": "x", "field": "NumberOfEmployees", "value": "many"}),
        )
        .await;
    assert_eq!(s, 400);
    let (_, v) = org.admin(Method::DELETE, "field-updates/Account", Value::Null).await;
    assert_eq!(v["removed"], json!(1));
    org.json(Method::PATCH, &format!("sobjects/Account/{id}"), Some(json!({"NumberOfEmployees": 500}))).await;
    let (_, rec) = org.json(Method::GET, &format!("sobjects/Account/{id}"), None).await;
    assert_eq!(rec["NumberOfEmployees"], json!(500));
}

#[tokio::test]
async fn daily_limit_is_enforced_and_reported() {
    let org = Org::start().await;
    org.admin(Method::PUT, "limits", json!({"DailyApiRequests": {"Max": 10, "Remaining": 2}})).await;
    let (s, limits) = org.json(Method::GET, "limits", None).await;
    assert_eq!(s, 200);
    assert_eq!(limits["DailyApiRequests"], json!({"Max": 10, "Remaining": 1}));
    org.json(Method::GET, "limits", None).await;
    let resp = org.call(Method::GET, "limits", None).await;
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(resp.headers()["sforce-limit-info"], "api-usage=10/10");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v, json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]));
}

#[tokio::test]
async fn faults_are_deterministic_and_shaped() {
    let org = Org::start().await;
    org.admin(Method::PUT, "faults", json!({"seed": 3, "serverUnavailable": 1.0})).await;
    let (s, v) = org.json(Method::GET, "limits", None).await;
    assert_eq!((s, code(&v)), (503, "SERVER_UNAVAILABLE"));
    org.admin(Method::PUT, "faults", json!({"seed": 3, "unableToLockRow": 1.0})).await;
    let (s, v) = org.json(Method::POST, "sobjects/Account", Some(account("A"))).await;
    assert_eq!((s, code(&v)), (400, "UNABLE_TO_LOCK_ROW"));
    org.admin(Method::PUT, "faults", json!({"seed": 3, "dropConnection": 1.0})).await;
    let err = org.http.get(org.url("limits")).bearer_auth(&org.token).send().await;
    assert!(err.is_err(), "a dropped connection is a transport error");
    let (s, v) = org.admin(Method::PUT, "faults", json!({"unableToLockRow": 2})).await;
    assert_eq!(s, 400, "{v}");
}

#[tokio::test]
async fn describe_lists_fields_and_custom_fields_can_be_added() {
    let org = Org::start().await;
    let (s, v) = org.json(Method::GET, "sobjects/Opportunity/describe", None).await;
    assert_eq!(s, 200);
    let stage = v["fields"].as_array().unwrap().iter().find(|f| f["name"] == json!("StageName")).unwrap();
    assert_eq!(stage["type"], json!("picklist"));
    assert_eq!(stage["nillable"], json!(false));
    assert!(stage["picklistValues"].as_array().unwrap().len() > 5);
    let (s, v) = org.admin(Method::POST, "fields/Account", json!([{"name": "Tier__c", "type": "picklist", "picklistValues": ["A", "B"]}, {"name": "bad name", "type": "string"}])).await;
    assert_eq!(s, 400, "{v}");
    let (_, v) = org.json(Method::GET, "sobjects/Account/describe", None).await;
    assert!(!v["fields"].as_array().unwrap().iter().any(|f| f["name"] == json!("Tier__c")), "a bad batch adds nothing");
    let (s, _) = org
        .admin(
            Method::POST,
            "fields/Account",
            json!({"name": "Tier__c", "type": "picklist", "picklistValues": ["A", "B"]}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = org.json(Method::POST, "sobjects/Account", Some(json!({"Name": "x", "tier__c": "A"}))).await;
    assert_eq!(s, 201);
    let (s, global) = org.json(Method::GET, "sobjects", None).await;
    assert_eq!(s, 200);
    assert_eq!(global["maxBatchSize"], json!(200));
}

#[tokio::test]
async fn get_updated_and_deleted() {
    let org = Org::start().await;
    org.admin(Method::PUT, "clock", json!({"now": "2026-03-01T10:00:00Z"})).await;
    let a = org.create("Account", account("A")).await;
    let b = org.create("Account", account("B")).await;
    org.admin(Method::PUT, "clock", json!({"advanceSeconds": 600})).await;
    org.call(Method::DELETE, &format!("sobjects/Account/{b}"), None).await;
    org.admin(Method::PUT, "clock", json!({"advanceSeconds": 600})).await;
    let (s, v) = org
        .json(Method::GET, "sobjects/Account/updated/?start=2026-03-01T09:00:00%2B00:00&end=2026-03-01T11:00:00Z", None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ids"], json!([a]));
    assert_eq!(v["latestDateCovered"], json!("2026-03-01T10:20:00.000+0000"));
    let (_, v) = org
        .json(Method::GET, "sobjects/Account/deleted/?start=2026-03-01T09:00:00Z&end=2026-03-01T11:00:00Z", None)
        .await;
    assert_eq!(v["deletedRecords"][0]["id"], json!(b));
    let (s, v) = org
        .json(Method::GET, "sobjects/Account/updated/?start=2025-01-01T00:00:00Z&end=2026-03-01T11:00:00Z", None)
        .await;
    assert_eq!((s, code(&v)), (400, "INVALID_REPLICATION_DATE"));
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let org = Org::with(Config { max_body_bytes: 1024, ..Config::default() }).await;
    let (s, v) =
        org.json(Method::POST, "sobjects/Account", Some(json!({"Name": "x", "Description": "y".repeat(4096)}))).await;
    assert_eq!((s, code(&v)), (413, "REQUEST_ENTITY_TOO_LARGE"));
}

#[tokio::test]
async fn seeding_is_all_or_nothing() {
    let org = Org::start().await;
    let (s, v) = org
        .admin(
            Method::POST,
            "records/Account",
            json!([{"Id": "0018d000000ABCD", "Name": "Seeded"}, {"Website": "no-name.com"}]),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["index"], json!(1));
    let (_, dump) = org.admin(Method::GET, "records/Account", Value::Null).await;
    assert_eq!(dump, json!([]));
    let (s, v) = org.admin(Method::POST, "records/Account", json!([{"Id": "0018d000000ABCD", "Name": "Seeded"}])).await;
    assert_eq!(s, 200, "{v}");
    let id = v["ids"][0].as_str().unwrap();
    let (s, rec) = org.json(Method::GET, &format!("sobjects/Account/{id}"), None).await;
    assert_eq!((s, rec["Name"].clone()), (200, json!("Seeded")));
    // IDs generated later never collide with seeded ones.
    let new_id = org.create("Account", account("New")).await;
    assert_ne!(new_id, id);
}

#[tokio::test]
async fn retired_versions_answer_410_and_unknown_ones_404() {
    let org = Org::start().await;
    let get = |v: &'static str| {
        let org = &org;
        async move {
            org.http
                .get(format!("{}/services/data/{v}/limits", org.emu.base_url))
                .bearer_auth(&org.token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(get("v30.0").await, 410);
    assert_eq!(get("v20.0").await, 410);
    assert_eq!(get("v99.0").await, 404);
    assert_eq!(get("vfoo").await, 404);
    assert_eq!(get("v60.0").await, 200);
}

#[tokio::test]
async fn identity_url_answers_the_identity_document() {
    let org = Org::start().await;
    let (_, resources) = org.json(Method::GET, "", None).await;
    let id_url = resources["identity"].as_str().unwrap().to_string();
    let v: Value = org.http.get(&id_url).bearer_auth(&org.token).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["id"], json!(id_url));
    assert_eq!(v["username"], json!("integration@usagesync.test"));
    let status = org.http.get(&id_url).bearer_auth("nope").send().await.unwrap().status().as_u16();
    assert_eq!(status, 403);
}

#[tokio::test]
async fn long_running_requests_hit_the_concurrency_limit() {
    let config =
        Config { long_running_after: std::time::Duration::from_millis(100), max_long_running: 2, ..Config::default() };
    let org = Org::with(config).await;
    org.admin(Method::PUT, "faults", json!({"latencyMs": 1500, "latencyShare": 1.0})).await;
    let slow = |org: &Org| org.http.get(org.url("limits")).bearer_auth(&org.token).send();
    let (a, b) = (slow(&org), slow(&org));
    let held = tokio::spawn(async move {
        let (a, b) = tokio::join!(a, b);
        (a.map(|r| r.status().as_u16()), b.map(|r| r.status().as_u16()))
    });
    // Once both are in flight past the long-running threshold, a third request is refused at once.
    let state = &org.emu.state;
    let long = || state.in_flight.lock().values().filter(|t| t.elapsed() >= state.config.long_running_after).count();
    eventually("two long-running requests", std::time::Duration::from_secs(10), || async {
        (long() >= 2).then_some(())
    })
    .await;
    org.admin(Method::PUT, "faults", json!({})).await;
    let (s, v) = org.json(Method::GET, "limits", None).await;
    assert_eq!((s, code(&v)), (403, "REQUEST_LIMIT_EXCEEDED"));
    assert_eq!(v[0]["message"], json!("ConcurrentPerOrgLongTxn Limit exceeded."));
    let (a, b) = held.await.unwrap();
    assert_eq!((a.unwrap(), b.unwrap()), (200, 200));
    // Once they finish, requests are served again.
    let (s, _) = org.json(Method::GET, "limits", None).await;
    assert_eq!(s, 200);
}
