//! The API surface an admin's everyday tools need (the Salesforce CLI above all): lenient URL
//! forms, the Organization object, query column metadata, parent-to-child subqueries, sObject
//! Tree and SOSL search.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

fn q(soql: &str) -> String {
    format!("query?q={}", url_encode(soql))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn double_and_trailing_slashes_reach_the_resource() {
    let org = Org::start().await;
    for path in [
        format!("{}//services/data/{V}/sobjects/Account/describe", org.emu.base_url),
        format!("{}/services/data/{V}/sobjects/Account/describe/", org.emu.base_url),
        format!("{}//services/data//{V}//limits", org.emu.base_url),
    ] {
        let resp = org.http.get(&path).bearer_auth(&org.token).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
    let resp = org.http.get(format!("{}//services/data/", org.emu.base_url)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let resp = org
        .http
        .get(format!("{}//services/oauth2/userinfo", org.emu.base_url))
        .bearer_auth(&org.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // A path that is wrong in its canonical form too is still a 404.
    let resp = org.http.get(format!("{}//services/nothing/", org.emu.base_url)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}

#[tokio::test]
async fn organization_is_one_read_only_record() {
    let org = Org::start().await;
    let (s, v) = org
        .json(
            Method::GET,
            &q("SELECT Name, InstanceName, IsSandbox, TrialExpirationDate, NamespacePrefix, OrganizationType FROM Organization"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["totalSize"], json!(1));
    let rec = &v["records"][0];
    assert_eq!(rec["IsSandbox"], json!(false));
    assert_eq!(rec["InstanceName"], json!("EMU1"));
    assert_eq!(rec["NamespacePrefix"], Value::Null);
    assert!(rec["Name"].as_str().is_some_and(|n| !n.is_empty()));
    let id = rec["attributes"]["url"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    assert!(id.starts_with("00D"), "{id}");

    let (s, d) = org.json(Method::GET, "sobjects/Organization/describe", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        (d["createable"].clone(), d["updateable"].clone(), d["deletable"].clone()),
        (json!(false), json!(false), json!(false))
    );
    let (s, v) = org.json(Method::PATCH, &format!("sobjects/Organization/{id}"), Some(json!({}))).await;
    assert_eq!((s, code(&v)), (400, "INSUFFICIENT_ACCESS_OR_READONLY"), "{v}");
    let (s, v) = org.json(Method::DELETE, &format!("sobjects/Organization/{id}"), None).await;
    assert_eq!((s, code(&v)), (400, "INSUFFICIENT_ACCESS_OR_READONLY"), "{v}");
    let (s, v) = org.json(Method::POST, "sobjects/Organization", Some(json!({"Name": "x"}))).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = org.json(Method::GET, &format!("sobjects/Organization/{id}"), None).await;
    assert_eq!((s, v["OrganizationType"].clone()), (200, json!("Developer Edition")));
}

#[tokio::test]
async fn subqueries_nest_children_as_query_results() {
    let org = Org::start().await;
    let acme = org.create("Account", json!({"Name": "Acme"})).await;
    let empty = org.create("Account", json!({"Name": "Empty"})).await;
    for name in ["Zed", "Amy", "Bob"] {
        org.create("Contact", json!({"LastName": name, "AccountId": acme})).await;
    }
    let gone = org.create("Contact", json!({"LastName": "Gone", "AccountId": acme})).await;
    org.call(Method::DELETE, &format!("sobjects/Contact/{gone}"), None).await;
    org.create(
        "Opportunity",
        json!({"Name": "Deal", "StageName": "Prospecting", "CloseDate": "2026-01-01", "AccountId": acme}),
    )
    .await;

    let (s, v) = org
        .json(
            Method::GET,
            &q("SELECT Name, (SELECT LastName FROM Contacts WHERE LastName != 'Bob' ORDER BY LastName LIMIT 5), \
                (SELECT Name FROM Opportunities) FROM Account ORDER BY Name"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["totalSize"], json!(2));
    let contacts = &v["records"][0]["Contacts"];
    assert_eq!(contacts["totalSize"], json!(2));
    assert_eq!(contacts["done"], json!(true));
    assert_eq!(contacts["records"][0]["LastName"], json!("Amy"));
    assert_eq!(contacts["records"][1]["LastName"], json!("Zed"));
    assert_eq!(contacts["records"][0]["attributes"]["type"], json!("Contact"));
    assert_eq!(v["records"][0]["Opportunities"]["records"][0]["Name"], json!("Deal"));
    // A parent without children has null there, as on Salesforce.
    assert_eq!(v["records"][1]["Name"], json!("Empty"));
    assert_eq!(v["records"][1]["Contacts"], Value::Null);
    let _ = empty;

    // queryAll also sees deleted children.
    let (_, v) = org
        .json(
            Method::GET,
            &format!(
                "queryAll?q={}",
                url_encode("SELECT Name, (SELECT LastName FROM Contacts) FROM Account WHERE Name = 'Acme'")
            ),
            None,
        )
        .await;
    assert_eq!(v["records"][0]["Contacts"]["totalSize"], json!(4));

    // Child relationships are in the describe, and an unknown one is refused.
    let (_, d) = org.json(Method::GET, "sobjects/Account/describe", None).await;
    let rels: Vec<&str> =
        d["childRelationships"].as_array().unwrap().iter().filter_map(|r| r["relationshipName"].as_str()).collect();
    for want in ["Contacts", "Opportunities", "Cases", "Tasks", "ChildAccounts"] {
        assert!(rels.contains(&want), "{rels:?}");
    }
    let (s, v) = org.json(Method::GET, &q("SELECT Name, (SELECT Id FROM Kids) FROM Account"), None).await;
    assert_eq!((s, code(&v)), (400, "INVALID_TYPE"), "{v}");
    assert!(v[0]["message"].as_str().unwrap().contains("Didn't understand relationship 'Kids'"));
    let (s, v) = org.json(Method::GET, &q("SELECT Name, (SELECT Nope FROM Contacts) FROM Account"), None).await;
    assert_eq!((s, code(&v)), (400, "INVALID_FIELD"), "{v}");
}

#[tokio::test]
async fn columns_true_answers_column_metadata() {
    let org = Org::start().await;
    org.create("Account", json!({"Name": "Acme"})).await;
    let (s, v) = org
        .json(
            Method::GET,
            &format!(
                "{}&columns=true",
                q("SELECT Id, Name, Owner.Email, Owner.Name, (SELECT LastName, Account.Name FROM Contacts) FROM Account")
            ),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v.get("records").is_none(), "{v}");
    assert_eq!(v["entityName"], json!("Account"));
    assert_eq!(v["idSelected"], json!(true));
    assert_eq!(v["keyPrefix"], json!("001"));
    let cols = v["columnMetadata"].as_array().unwrap();
    let names: Vec<&str> = cols.iter().map(|c| c["columnName"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["Id", "Name", "Owner", "Contacts"]);
    assert_eq!(cols[1]["apexType"], json!("String"));
    assert_eq!(cols[1]["aggregate"], json!(false));
    let owner: Vec<&str> =
        cols[2]["joinColumns"].as_array().unwrap().iter().map(|c| c["columnName"].as_str().unwrap()).collect();
    assert_eq!(owner, vec!["Email", "Name"]);
    assert_eq!(cols[3]["aggregate"], json!(true));
    assert_eq!(cols[3]["joinColumns"][0]["columnName"], json!("LastName"));
    assert_eq!(cols[3]["joinColumns"][1]["columnName"], json!("Account"));
    assert_eq!(cols[3]["joinColumns"][1]["joinColumns"][0]["columnName"], json!("Name"));
    // A query error is the same error as without columns=true.
    let (s, v) = org.json(Method::GET, &format!("{}&columns=true", q("SELECT Nope FROM Account")), None).await;
    assert_eq!((s, code(&v)), (400, "INVALID_FIELD"));
}

#[tokio::test]
async fn bulk_query_refuses_subqueries() {
    let org = Org::start().await;
    let (s, v) = org
        .json(
            Method::POST,
            "jobs/query",
            Some(json!({"operation": "query", "query": "SELECT Name, (SELECT Id FROM Contacts) FROM Account"})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v[0]["message"].as_str().unwrap().contains("Aggregate Relationships"), "{v}");
}

fn tree_account(reference: &str, name: &str, contacts: &[(&str, &str)]) -> Value {
    let children: Vec<Value> = contacts
        .iter()
        .map(|(r, last)| json!({"attributes": {"type": "Contact", "referenceId": r}, "LastName": last}))
        .collect();
    json!({"attributes": {"type": "Account", "referenceId": reference}, "Name": name, "Contacts": {"records": children}})
}

#[tokio::test]
async fn sobject_tree_creates_parents_then_children_in_one_call() {
    let org = Org::start().await;
    let before = org.usage().await["byKind"]["composite"].as_u64().unwrap_or(0);
    let body = json!({"records": [
        tree_account("ref1", "Tree One", &[("ref2", "Kid A"), ("ref3", "Kid B")]),
        tree_account("ref4", "Tree Two", &[("ref5", "Kid C")]),
    ]});
    let (s, v) = org.json(Method::POST, "composite/tree/Account", Some(body)).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["hasErrors"], json!(false));
    let refs: Vec<&str> = v["results"].as_array().unwrap().iter().map(|r| r["referenceId"].as_str().unwrap()).collect();
    // Level by level: both roots first, as Salesforce documents the example.
    assert_eq!(refs, vec!["ref1", "ref4", "ref2", "ref3", "ref5"]);
    let account_one = v["results"][0]["id"].as_str().unwrap().to_string();
    assert!(account_one.starts_with("001"));
    assert_eq!(org.usage().await["byKind"]["composite"].as_u64().unwrap_or(0), before + 1);
    let (_, rows) = org
        .json(
            Method::GET,
            &q("SELECT Name, (SELECT LastName FROM Contacts ORDER BY LastName) FROM Account WHERE Name = 'Tree One'"),
            None,
        )
        .await;
    assert_eq!(rows["records"][0]["Contacts"]["records"][1]["LastName"], json!("Kid B"));
    let (_, c) = org
        .json(Method::GET, &q(&format!("SELECT COUNT() FROM Contact WHERE AccountId = '{account_one}'")), None)
        .await;
    assert_eq!(c["totalSize"], json!(2));
}

#[tokio::test]
async fn sobject_tree_is_all_or_nothing() {
    let org = Org::start().await;
    let body = json!({"records": [
        tree_account("ok1", "Fine", &[("ok2", "Fine Kid")]),
        {"attributes": {"type": "Account", "referenceId": "bad1"}, "Name": "Parent",
         "Contacts": {"records": [{"attributes": {"type": "Contact", "referenceId": "bad2"}, "FirstName": "No last name"}]}},
    ]});
    let (s, v) = org.json(Method::POST, "composite/tree/Account", Some(body)).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["hasErrors"], json!(true));
    assert_eq!(v["results"].as_array().unwrap().len(), 1);
    assert_eq!(v["results"][0]["referenceId"], json!("bad2"));
    assert_eq!(v["results"][0]["errors"][0]["statusCode"], json!("REQUIRED_FIELD_MISSING"));
    let (_, c) = org.json(Method::GET, &q("SELECT COUNT() FROM Account"), None).await;
    assert_eq!(c["totalSize"], json!(0), "rolled back");

    // Duplicate reference IDs: one result per occurrence.
    let body = json!({"records": [tree_account("dup", "A", &[]), tree_account("x", "B", &[("dup", "K")])]});
    let (s, v) = org.json(Method::POST, "composite/tree/Account", Some(body)).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["results"].as_array().unwrap().len(), 2);
    assert_eq!(v["results"][0]["errors"][0]["statusCode"], json!("INVALID_INPUT"));

    // More than 200 records, a root of another type, a missing reference ID.
    let many: Vec<Value> = (0..201).map(|i| tree_account(&format!("r{i}"), "N", &[])).collect();
    let (s, v) = org.json(Method::POST, "composite/tree/Account", Some(json!({"records": many}))).await;
    assert_eq!((s, code(&v)), (400, "LIMIT_EXCEEDED"), "{v}");
    let (s, _) =
        org.json(Method::POST, "composite/tree/Contact", Some(json!({"records": [tree_account("a", "N", &[])]}))).await;
    assert_eq!(s, 400);
    let (s, v) = org
        .json(
            Method::POST,
            "composite/tree/Account",
            Some(json!({"records": [{"attributes": {"type": "Account"}, "Name": "N"}]})),
        )
        .await;
    assert_eq!((s, code(&v)), (400, "INVALID_INPUT"), "{v}");
    let (_, c) = org.json(Method::GET, &q("SELECT COUNT() FROM Account"), None).await;
    assert_eq!(c["totalSize"], json!(0));
}

#[tokio::test]
async fn sosl_finds_whole_words_in_the_chosen_fields() {
    let org = Org::start().await;
    let acme = org.create("Account", json!({"Name": "Acme Rockets", "Phone": "555-0100"})).await;
    org.create("Account", json!({"Name": "Acmeology"})).await;
    org.create("Account", json!({"Name": "Other"})).await;
    org.create("Contact", json!({"LastName": "Runner", "Email": "road@acme.example", "AccountId": acme})).await;
    org.create("Lead", json!({"LastName": "Coyote", "Company": "Acme"})).await;

    let search = |sosl: &str| format!("search?q={}", url_encode(sosl));
    let (s, v) = org
        .json(
            Method::GET,
            &search("FIND {acme} RETURNING Account(Id, Name ORDER BY Name), Contact(LastName, Email)"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let rows = v["searchRecords"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().filter_map(|r| r["Name"].as_str().or(r["LastName"].as_str())).collect();
    assert_eq!(names, vec!["Acme Rockets", "Runner"], "{v}");
    assert_eq!(rows[0]["attributes"]["type"], json!("Account"));

    // Wildcards, scopes, WHERE inside RETURNING, the overall LIMIT.
    let (_, v) = org
        .json(
            Method::GET,
            &search("FIND {acme*} IN NAME FIELDS RETURNING Account(Name WHERE Name != 'Acmeology')"),
            None,
        )
        .await;
    assert_eq!(v["searchRecords"].as_array().unwrap().len(), 1);
    let (_, v) =
        org.json(Method::GET, &search("FIND {acme} IN EMAIL FIELDS RETURNING Account, Contact(LastName)"), None).await;
    assert_eq!(v["searchRecords"][0]["LastName"], json!("Runner"));
    let (_, v) = org.json(Method::GET, &search("FIND {acme*} RETURNING Account(Name) LIMIT 1"), None).await;
    assert_eq!(v["searchRecords"].as_array().unwrap().len(), 1);
    let (_, v) = org.json(Method::GET, &search("FIND {Rockets OR Coyote}"), None).await;
    let types: Vec<&str> =
        v["searchRecords"].as_array().unwrap().iter().map(|r| r["attributes"]["type"].as_str().unwrap()).collect();
    assert_eq!(types, vec!["Account", "Lead"]);
    // Without RETURNING only Ids come back.
    assert!(v["searchRecords"][0].get("Name").is_none());

    let (s, v) = org.json(Method::GET, &search("FIND {a}"), None).await;
    assert_eq!((s, code(&v)), (400, "MALFORMED_SEARCH"));
    let (s, v) = org.json(Method::GET, &search("FIND acme"), None).await;
    assert_eq!((s, code(&v)), (400, "MALFORMED_SEARCH"));
    // Before v37.0 the answer is a bare array.
    let resp = org
        .http
        .get(format!("{}/services/data/v36.0/{}", org.emu.base_url, search("FIND {Rockets}")))
        .bearer_auth(&org.token)
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
}

#[tokio::test]
async fn subqueries_nest_five_levels_from_v58() {
    let org = Org::start().await;
    let acme = org.create("Account", json!({"Name": "Acme"})).await;
    let jo = org.create("Contact", json!({"LastName": "Jo", "AccountId": acme})).await;
    org.create("Case", json!({"Subject": "Broken", "ContactId": jo})).await;
    org.create("Contact", json!({"LastName": "Al", "AccountId": acme})).await;
    let soql =
        "SELECT Name, (SELECT LastName, (SELECT Subject FROM Cases) FROM Contacts ORDER BY LastName) FROM Account";
    let (s, v) = org.json(Method::GET, &q(soql), None).await;
    assert_eq!(s, 200, "{v}");
    let contacts = &v["records"][0]["Contacts"]["records"];
    assert_eq!(contacts[0]["LastName"], json!("Al"));
    assert_eq!(contacts[0]["Cases"], Value::Null);
    assert_eq!(contacts[1]["Cases"]["records"][0]["Subject"], json!("Broken"));
    let (_, cols) = org.json(Method::GET, &format!("{}&columns=true", q(soql)), None).await;
    let inner = &cols["columnMetadata"][1]["joinColumns"];
    assert_eq!(inner[1]["columnName"], json!("Cases"), "{cols}");
    assert_eq!(inner[1]["aggregate"], json!(true));
    assert_eq!(inner[1]["joinColumns"][0]["columnName"], json!("Subject"));

    // Before v58.0 one level only; five at most after.
    let resp = org
        .http
        .get(format!("{}/services/data/v57.0/{}", org.emu.base_url, q(soql)))
        .bearer_auth(&org.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let nest = |levels: usize| {
        let mut inner = "SELECT Name FROM ChildAccounts".to_string();
        for _ in 1..levels {
            inner = format!("SELECT Name, ({inner}) FROM ChildAccounts");
        }
        format!("SELECT Name, ({inner}) FROM Account")
    };
    let (s, v) = org.json(Method::GET, &q(&nest(5)), None).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = org.json(Method::GET, &q(&nest(6)), None).await;
    assert_eq!((s, code(&v)), (400, "MALFORMED_QUERY"), "{v}");
}
