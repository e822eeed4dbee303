//! SOQL query/queryAll streams, pagination via nextRecordsUrl, batch size, query errors, and
//! the SOQL builder's escaping end to end.

use futures_util::TryStreamExt;
use salesforce::soql::{Condition, Order, SoqlQuery};
use salesforce::{ErrorCode, QueryOptions, QueryPage};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::support::*;

#[derive(Debug, Deserialize)]
struct Row {
    #[serde(rename = "Name")]
    name: String,
}

#[tokio::test]
async fn pages_follow_next_records_url_one_call_each() {
    let org = Org::start().await;
    let records: Vec<Value> = (0..450).map(|i| json!({"Name": format!("Q{i:03}")})).collect();
    org.seed("Account", Value::Array(records)).await;
    let client = org.client();
    client.identity().await.unwrap();

    let before = org.api_calls().await;
    let pages: Vec<QueryPage<Row>> = client
        .query_pages(
            "SELECT Name FROM Account ORDER BY Name",
            QueryOptions { batch_size: Some(200), include_deleted: false },
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(org.api_calls().await - before, 3);
    assert_eq!(pages.len(), 3);
    assert_eq!(pages.iter().map(|p| p.records.len()).collect::<Vec<_>>(), vec![200, 200, 50]);
    assert!(pages.iter().all(|p| p.total_size == 450));
    assert!(!pages[0].done && pages[0].next_records_url.is_some());
    assert!(pages[2].done && pages[2].next_records_url.is_none());

    let rows: Vec<Row> = client.query_collect("SELECT Name FROM Account ORDER BY Name").await.unwrap();
    assert_eq!(rows.len(), 450);
    assert_eq!(rows[449].name, "Q449");
}

#[tokio::test]
async fn query_all_includes_deleted_rows() {
    let org = Org::start().await;
    let client = org.client();
    let created = client.create("Account", &json!({"Name": "Gone"})).await.unwrap();
    client.delete("Account", &created.id).await.unwrap();
    let q = SoqlQuery::select(["Id", "IsDeleted"], "Account").filter(Condition::eq("Id", &created.id)).build().unwrap();
    let live: Vec<Value> = client.query_collect(q.clone()).await.unwrap();
    assert!(live.is_empty());
    let all: Vec<Value> = client.query_all(q).try_collect().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["IsDeleted"], true);
}

#[tokio::test]
async fn hostile_literals_match_exactly_one_record() {
    let org = Org::start().await;
    let hostile = ["O'Brien", "' OR Name != '", "back\\slash", "tail\\", "quote\"s", "new\nline\ttab", "50% _off"];
    let records: Vec<Value> = hostile.iter().map(|n| json!({"Name": n})).collect();
    org.seed("Account", Value::Array(records)).await;
    org.seed("Account", json!([{"Name": "Bystander"}])).await;
    let client = org.client();
    for name in hostile {
        let q = SoqlQuery::select(["Name"], "Account")
            .filter(Condition::eq("Name", name))
            .order_by("Name", Order::Asc)
            .build()
            .unwrap();
        let rows: Vec<Row> = client.query_collect(q.clone()).await.unwrap();
        assert_eq!(rows.len(), 1, "{q}");
        assert_eq!(rows[0].name, name);
    }
    let like = SoqlQuery::select(["Name"], "Account").filter(Condition::starts_with("Name", "50% _")).build().unwrap();
    let rows: Vec<Row> = client.query_collect(like).await.unwrap();
    assert_eq!(rows.len(), 1);
}

#[tokio::test]
async fn query_errors_are_typed() {
    let org = Org::start().await;
    let client = org.client();
    let cases = [
        ("SELECT Nope__c FROM Account", ErrorCode::InvalidField),
        ("SELECT Id FROM Nope__c", ErrorCode::InvalidType),
        ("SELEKT Id FROM Account", ErrorCode::MalformedQuery),
    ];
    for (q, code) in cases {
        let err = client.query_collect::<Value>(q).await.unwrap_err();
        let e = api(&err);
        assert_eq!(e.status.as_u16(), 400, "{q}");
        assert_eq!(e.error_code, code, "{q}: {}", e.message);
        assert!(!err.is_retryable());
    }
}

#[derive(Debug, Deserialize)]
struct Contact {
    #[serde(rename = "LastName")]
    last_name: String,
}

#[derive(Debug, Deserialize)]
struct AccountWithContacts {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Contacts")]
    contacts: Option<salesforce::Children<Contact>>,
}

#[tokio::test]
async fn parents_come_with_their_children_in_one_call() {
    let org = Org::start().await;
    let ids = org.seed("Account", json!([{"Name": "With kids"}, {"Name": "Without"}])).await;
    org.seed(
        "Contact",
        json!([
            {"LastName": "Zed", "AccountId": ids[0]},
            {"LastName": "Amy", "AccountId": ids[0]},
            {"LastName": "Bob", "AccountId": ids[0]}
        ]),
    )
    .await;
    let client = org.client();
    client.identity().await.unwrap();
    let q = SoqlQuery::select(["Name"], "Account")
        .with_children(SoqlQuery::select(["LastName"], "Contacts").order_by("LastName", Order::Asc).limit(2))
        .order_by("Name", Order::Asc)
        .build()
        .unwrap();
    let before = org.api_calls().await;
    let rows: Vec<AccountWithContacts> = client.query_with_children(q, QueryOptions::default()).await.unwrap();
    assert_eq!(org.api_calls().await - before, 1);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].name, "With kids");
    let names: Vec<&str> =
        salesforce::Children::of(rows[0].contacts.as_ref()).iter().map(|c| c.last_name.as_str()).collect();
    assert_eq!(names, vec!["Amy", "Bob"]);
    assert_eq!(rows[0].contacts.as_ref().map(|c| (c.total_size, c.done)), Some((2, true)));
    // No children: Salesforce sends null, not an empty result.
    assert_eq!(rows[1].name, "Without");
    assert!(rows[1].contacts.is_none());
    assert!(salesforce::Children::of(rows[1].contacts.as_ref()).is_empty());

    // Two levels: the Contacts' Cases inside each Contact.
    let contact = client.query_collect::<Value>("SELECT Id FROM Contact WHERE LastName = 'Amy'").await.unwrap();
    let amy = contact[0]["Id"].as_str().unwrap().to_string();
    org.seed("Case", json!([{"Subject": "Help", "ContactId": amy}])).await;
    let q = SoqlQuery::select(["Name"], "Account")
        .with_children(
            SoqlQuery::select(["LastName"], "Contacts")
                .with_children(SoqlQuery::select(["Subject"], "Cases"))
                .order_by("LastName", Order::Asc),
        )
        .filter(Condition::eq("Name", "With kids"))
        .build()
        .unwrap();
    let rows: Vec<Value> = client.query_with_children(q, QueryOptions::default()).await.unwrap();
    assert_eq!(rows[0]["Contacts"]["records"][0]["Cases"]["records"][0]["Subject"], json!("Help"));
    assert_eq!(rows[0]["Contacts"]["records"][1]["Cases"], Value::Null);

    // An unknown child relationship is the query's error, typed.
    let bad = SoqlQuery::select(["Name"], "Account").with_children(SoqlQuery::select(["Id"], "Kids")).build().unwrap();
    let err = client.query_with_children::<Value>(bad, QueryOptions::default()).await.unwrap_err();
    assert_eq!(api(&err).error_code, ErrorCode::InvalidType, "{err}");
}
