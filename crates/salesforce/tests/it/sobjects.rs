//! Single-record CRUD, upsert by external ID and the documented error codes.

use salesforce::{ApiVersion, Error, ErrorCode, RecordRef, RetryClass, SalesforceId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::support::*;

#[derive(Debug, Deserialize)]
struct Account {
    #[serde(rename = "Id")]
    id: SalesforceId,
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Website", default)]
    website: Option<String>,
}

#[tokio::test]
async fn create_get_update_delete_round_trip() {
    let org = Org::start().await;
    let client = org.client();

    let created = client.create("Account", &json!({"Name": "Acme", "Website": "acme.test"})).await.unwrap();
    assert!(created.success);
    assert_eq!(created.id.key_prefix(), "001");

    let fetched: Account = client.get("Account", &created.id, None).await.unwrap();
    assert_eq!(fetched.id, created.id);
    assert_eq!(fetched.name, "Acme");
    assert_eq!(fetched.website.as_deref(), Some("acme.test"));

    let raw: Value = client.get("Account", &created.id, Some(&["Name"])).await.unwrap();
    assert_eq!(raw["attributes"]["type"], "Account");
    assert!(raw.get("Website").is_none(), "only requested fields: {raw}");

    client.update("Account", &created.id, &json!({"Website": "acme.example", "Id": "ignored"})).await.unwrap();
    let fetched: Account = client.get("Account", &created.id, None).await.unwrap();
    assert_eq!(fetched.website.as_deref(), Some("acme.example"));

    client.delete("Account", &created.id).await.unwrap();
    let err = client.get::<Value>("Account", &created.id, None).await.unwrap_err();
    let e = api(&err);
    assert_eq!(e.status.as_u16(), 404);
    assert!(matches!(e.error_code, ErrorCode::NotFound | ErrorCode::EntityIsDeleted), "{e}");
}

#[tokio::test]
async fn fifteen_character_ids_are_accepted_everywhere() {
    let org = Org::start().await;
    let client = org.client();
    let created = client.create("Account", &json!({"Name": "Short"})).await.unwrap();
    let short = SalesforceId::parse(created.id.as_15()).unwrap();
    let fetched: Account = client.get("Account", &short, None).await.unwrap();
    assert_eq!(fetched.id.as_str(), created.id.as_str());
}

#[tokio::test]
async fn upsert_creates_then_updates_and_reports_created() {
    let org = Org::start().await;
    let client = org.client();
    let value = "acct/42 a@b.inc?#%";

    let first = client.upsert("Account", "Pendo_Account_Id__c", value, &json!({"Name": "Upserted"})).await.unwrap();
    assert!(first.created);
    let id = first.id.clone().unwrap();

    // The external ID in the body is stripped, as Salesforce rejects it there.
    let second = client
        .upsert(
            "Account",
            "Pendo_Account_Id__c",
            value,
            &json!({"Name": "Upserted again", "Pendo_Account_Id__c": value}),
        )
        .await
        .unwrap();
    assert!(!second.created);
    assert_eq!(second.id, Some(id.clone()));

    let by_ext: Account = client.get_by_external_id("Account", "Pendo_Account_Id__c", value, None).await.unwrap();
    assert_eq!(by_ext.id, id);
    assert_eq!(by_ext.name, "Upserted again");
}

#[tokio::test]
async fn upsert_update_on_v45_is_204_without_body() {
    let org = Org::start().await;
    let client = org.client_with(ApiVersion::new(45), 3);
    let created = client.upsert("Account", "Pendo_Account_Id__c", "old-api", &json!({"Name": "Old"})).await.unwrap();
    assert!(created.created);
    assert!(created.id.is_some());
    let updated = client.upsert("Account", "Pendo_Account_Id__c", "old-api", &json!({"Name": "Old 2"})).await.unwrap();
    assert!(!updated.created);
    assert_eq!(updated.id, None);
}

#[tokio::test]
async fn multiple_external_id_matches_are_a_typed_error_with_urls() {
    let org = Org::start().await;
    org.add_field("Account", json!({"name": "Legacy_Key__c", "type": "string", "length": 40, "externalId": true}))
        .await;
    let ids = org
        .seed("Account", json!([{"Name": "Twin A", "Legacy_Key__c": "K1"}, {"Name": "Twin B", "Legacy_Key__c": "K1"}]))
        .await;
    let client = org.client();

    let err = client.get_by_external_id::<Value>("Account", "Legacy_Key__c", "K1", None).await.unwrap_err();
    match &err {
        Error::MultipleMatches { urls, context } => {
            assert_eq!(urls.len(), 2);
            for id in &ids {
                assert!(urls.iter().any(|u| u.ends_with(id.as_str())), "{urls:?}");
            }
            assert_eq!(context.object.as_deref(), Some("Account"));
        }
        other => panic!("expected MultipleMatches, got {other:?}"),
    }
    assert_eq!(err.retry_class(), RetryClass::Permanent);

    let err = client.upsert("Account", "Legacy_Key__c", "K1", &json!({"Name": "Which?"})).await.unwrap_err();
    assert!(matches!(err, Error::MultipleMatches { ref urls, .. } if urls.len() == 2), "{err:?}");
}

#[tokio::test]
async fn documented_error_codes_are_decoded_with_context() {
    let org = Org::start().await;
    let client = org.client();

    // REQUIRED_FIELD_MISSING
    let err = client.create("Account", &json!({"Website": "x"})).await.unwrap_err();
    let e = api(&err);
    assert_eq!((e.status.as_u16(), &e.error_code), (400, &ErrorCode::RequiredFieldMissing));
    assert_eq!(e.fields, vec!["Name"]);
    assert_eq!(e.context.object.as_deref(), Some("Account"));
    assert_eq!(err.retry_class(), RetryClass::Permanent);
    assert!(!err.may_have_committed());

    // INVALID_FIELD
    let err = client.create("Account", &json!({"Name": "A", "Nope__c": 1})).await.unwrap_err();
    let e = api(&err);
    assert_eq!((e.status.as_u16(), &e.error_code), (400, &ErrorCode::InvalidField));
    assert!(e.message.contains("Nope__c"), "{}", e.message);

    // MALFORMED_ID in a field value
    let err = client.create("Contact", &json!({"LastName": "X", "AccountId": "garbage"})).await.unwrap_err();
    let e = api(&err);
    assert_eq!((e.status.as_u16(), &e.error_code), (400, &ErrorCode::MalformedId));

    // STRING_TOO_LONG
    let err = client.create("Account", &json!({"Name": "x".repeat(300)})).await.unwrap_err();
    let e = api(&err);
    assert_eq!((e.status.as_u16(), &e.error_code), (400, &ErrorCode::StringTooLong));
    assert_eq!(e.fields, vec!["Name"]);

    // DUPLICATE_VALUE on a unique external ID
    client.create("Account", &json!({"Name": "One", "Pendo_Account_Id__c": "dup"})).await.unwrap();
    let err = client.create("Account", &json!({"Name": "Two", "Pendo_Account_Id__c": "dup"})).await.unwrap_err();
    let e = api(&err);
    assert_eq!((e.status.as_u16(), &e.error_code), (400, &ErrorCode::DuplicateValue));
    assert_eq!(err.retry_class(), RetryClass::Permanent);

    // NOT_FOUND: a well-formed ID with no record, and an unknown external ID field.
    let missing = SalesforceId::parse("001000000000001").unwrap();
    let err = client.get::<Value>("Account", &missing, None).await.unwrap_err();
    let e = api(&err);
    assert_eq!((e.status.as_u16(), &e.error_code), (404, &ErrorCode::NotFound));
    assert_eq!(e.context.record.as_deref(), Some(&RecordRef::Id(missing.to_string())));
    let err = client.upsert("Account", "Not_An_Ext__c", "v", &json!({"Name": "A"})).await.unwrap_err();
    let e = api(&err);
    assert_eq!((e.status.as_u16(), &e.error_code), (404, &ErrorCode::NotFound));
    let err = client.get_by_external_id::<Value>("Account", "Pendo_Account_Id__c", "no-such", None).await.unwrap_err();
    assert_eq!(api(&err).status.as_u16(), 404);

    // INVALID_FIELD on a fields list.
    let created = client.create("Account", &json!({"Name": "F"})).await.unwrap();
    let err = client.get::<Value>("Account", &created.id, Some(&["Bogus__c"])).await.unwrap_err();
    assert_eq!(api(&err).error_code, ErrorCode::InvalidField);
}

#[tokio::test]
async fn invalid_names_never_reach_the_server() {
    let org = Org::start().await;
    let client = org.client();
    let before = org.api_calls().await;
    for object in ["Account/../x", "Account?x=1", "", "Acc ount"] {
        let err = client.create(object, &json!({"Name": "A"})).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    }
    let err = client.upsert("Account", "Ext/../Id", "v", &json!({})).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)));
    assert_eq!(org.api_calls().await, before);
}
