//! End-to-end tests of the SOQL engine over a seeded org: result shapes, typed filters, ordering,
//! paging clauses, queryAll, and Salesforce's error codes and messages.

use chrono::{DateTime, NaiveDate, Utc};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;
use crate::salesforce::store::{Db, INTEGRATION_USER_ID, WriteCtx, parse_datetime};

const TAIL: &str = "If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.";

fn at(s: &str) -> WriteCtx {
    WriteCtx { user_id: INTEGRATION_USER_ID.into(), now: parse_datetime(s).unwrap() }
}

fn body(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 5, 15).unwrap()
}

fn now() -> DateTime<Utc> {
    parse_datetime("2024-05-15T12:00:00Z").unwrap()
}

fn run_with(db: &Db, q: &str, all_rows: bool) -> Result<QueryOutput, SoqlError> {
    execute(&parse(q)?, db, all_rows, "62.0", today(), now())
}

fn run(db: &Db, q: &str) -> QueryOutput {
    run_with(db, q, false).unwrap_or_else(|e| panic!("{q}: {e}"))
}

fn fail(db: &Db, q: &str) -> SoqlError {
    match run_with(db, q, false) {
        Ok(out) => panic!("{q}: expected an error, got {out:?}"),
        Err(e) => e,
    }
}

/// The values of one key across the result, in order.
fn col(out: &QueryOutput, key: &str) -> Vec<Value> {
    out.records.iter().map(|r| r[key].clone()).collect()
}

fn names(db: &Db, q: &str) -> Vec<String> {
    run(db, q).records.iter().map(|r| r["Name"].as_str().unwrap_or("<null>").to_string()).collect()
}

struct World {
    db: Db,
    acme: String,
    beta: String,
    gamma: String,
    gone: String,
    jane: String,
    opp: String,
}

fn world() -> World {
    let mut db = Db::new();
    let acme = db
        .create(
            "Account",
            &body(json!({"Name": "Acme", "Industry": "Technology", "NumberOfEmployees": 100,
                         "AnnualRevenue": 1500000.5, "Pendo_Account_Id__c": "acme-1", "Plan_Tier__c": "Growth",
                         "Renewal_Date__c": "2024-05-20", "Pendo_Last_Active__c": "2024-05-14T10:00:00Z"})),
            &at("2024-05-01T09:00:00Z"),
        )
        .unwrap();
    let beta = db
        .create(
            "Account",
            &body(json!({"Name": "beta corp", "NumberOfEmployees": 5, "Plan_Tier__c": "Free",
                         "Renewal_Date__c": "2024-04-30", "Pendo_Last_Active__c": "2024-05-15T23:59:59Z"})),
            &at("2024-05-14T09:00:00Z"),
        )
        .unwrap();
    let gamma = db
        .create(
            "Account",
            &body(json!({"Name": "Gamma", "Industry": "Banking", "Plan_Tier__c": "Enterprise", "ParentId": acme,
                         "Renewal_Date__c": "2024-05-15", "AnnualRevenue": -20})),
            &at("2024-05-15T00:00:00Z"),
        )
        .unwrap();
    db.create(
        "Account",
        &body(json!({"Name": "O'Brien \"Ltd\"\\", "NumberOfEmployees": 5})),
        &at("2024-03-01T00:00:00Z"),
    )
    .unwrap();
    db.create("Account", &body(json!({"Name": "100% Pure_Co", "Industry": "Retail"})), &at("2024-03-02T00:00:00Z"))
        .unwrap();
    let gone = db
        .create(
            "Account",
            &body(json!({"Name": "Gone Inc", "Pendo_Account_Id__c": "gone-1"})),
            &at("2024-01-01T00:00:00Z"),
        )
        .unwrap();
    db.delete("Account", &gone, &at("2024-05-10T00:00:00Z")).unwrap();
    let jane = db
        .create(
            "Contact",
            &body(json!({"FirstName": "Jane", "LastName": "Doe", "Email": "jane@acme.test", "AccountId": acme})),
            &at("2024-05-02T00:00:00Z"),
        )
        .unwrap();
    db.create("Contact", &body(json!({"LastName": "Orphan"})), &at("2024-05-02T00:00:00Z")).unwrap();
    let opp = db
        .create(
            "Opportunity",
            &body(
                json!({"Name": "Big deal", "StageName": "Prospecting", "CloseDate": "2024-06-30", "AccountId": acme}),
            ),
            &at("2024-05-03T00:00:00Z"),
        )
        .unwrap();
    db.create(
        "Task",
        &body(json!({"Subject": "Call Jane", "WhatId": acme, "WhoId": jane, "ActivityDate": "2024-05-15"})),
        &at("2024-05-04T00:00:00Z"),
    )
    .unwrap();
    db.create("Task", &body(json!({"Subject": "Deal follow-up", "WhatId": opp})), &at("2024-05-05T00:00:00Z")).unwrap();
    db.create("Task", &body(json!({"Subject": "Loose end"})), &at("2024-05-06T00:00:00Z")).unwrap();
    World { db, acme, beta, gamma, gone, jane, opp }
}

// ---- shapes ----------------------------------------------------------------------------------

#[test]
fn records_have_attributes_and_canonical_keys() {
    let w = world();
    let out = run(&w.db, "select name, ID, pendo_account_id__C from ACCOUNT where name = 'acme'");
    assert_eq!(out.total_size, 1);
    let rec = &out.records[0];
    assert_eq!(
        rec,
        &json!({"attributes": {"type": "Account", "url": format!("/services/data/v62.0/sobjects/Account/{}", w.acme)},
                "Name": "Acme", "Id": w.acme, "Pendo_Account_Id__c": "acme-1"})
    );
    // JSON objects are unordered; the emulator serialises keys in lexical order (see the README).
    let mut keys: Vec<&String> = rec.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["Id", "Name", "Pendo_Account_Id__c", "attributes"]);
    assert_eq!(parse("select Id from account").unwrap().object(), "account");
}

#[test]
fn unset_fields_are_null_and_empty_results_are_empty() {
    let w = world();
    let out = run(&w.db, "SELECT Industry FROM Account WHERE Name = 'beta corp'");
    assert_eq!(col(&out, "Industry"), vec![Value::Null]);
    let out = run(&w.db, "SELECT Id FROM Account WHERE Name = 'nobody'");
    assert_eq!(out, QueryOutput { total_size: 0, records: vec![] });
    let out = run(&w.db, "SELECT Id FROM Lead");
    assert_eq!(out.total_size, 0);
}

#[test]
fn parent_paths_nest_and_merge() {
    let w = world();
    let out = run(
        &w.db,
        "SELECT Name, Account.Name, Owner.Email, Account.Owner.Name, Account.Industry FROM Contact ORDER BY LastName",
    );
    let jane = &out.records[0];
    assert_eq!(
        jane["Account"],
        json!({"attributes": {"type": "Account", "url": format!("/services/data/v62.0/sobjects/Account/{}", w.acme)},
               "Name": "Acme",
               "Owner": {"attributes": {"type": "User", "url": format!("/services/data/v62.0/sobjects/User/{INTEGRATION_USER_ID}")},
                         "Name": "Integration User"},
               "Industry": "Technology"})
    );
    assert_eq!(jane["Owner"]["Email"], json!("integration@usagesync.test"));
    let mut keys: Vec<&String> = jane.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["Account", "Name", "Owner", "attributes"]);
    // An empty lookup renders as null.
    assert_eq!(out.records[1]["Account"], Value::Null);
    assert_eq!(out.records[1]["Name"], json!("Orphan"));
}

#[test]
fn self_relationship_and_object_prefix() {
    let w = world();
    let out = run(&w.db, "SELECT Account.Name, Parent.Name FROM Account WHERE Parent.Name = 'ACME'");
    assert_eq!(out.total_size, 1);
    assert_eq!(out.records[0]["Name"], json!("Gamma"));
    assert_eq!(out.records[0]["Parent"]["Name"], json!("Acme"));
}

#[test]
fn polymorphic_relationships_resolve_by_key_prefix() {
    let w = world();
    let out = run(&w.db, "SELECT Subject, What.Name, What.Type, Who.Name, What.Email FROM Task ORDER BY Subject");
    let subjects = col(&out, "Subject");
    assert_eq!(subjects, vec![json!("Call Jane"), json!("Deal follow-up"), json!("Loose end")]);
    let call = &out.records[0];
    assert_eq!(call["What"]["attributes"]["type"], json!("Account"));
    assert_eq!(call["What"]["Name"], json!("Acme"));
    assert_eq!(call["What"]["Type"], json!("Account"));
    assert_eq!(call["What"]["Email"], Value::Null);
    assert_eq!(call["Who"]["Name"], json!("Jane Doe"));
    assert_eq!(call["Who"]["attributes"]["url"], json!(format!("/services/data/v62.0/sobjects/Contact/{}", w.jane)));
    let deal = &out.records[1];
    assert_eq!(deal["What"]["attributes"]["type"], json!("Opportunity"));
    assert_eq!(deal["What"]["Name"], json!("Big deal"));
    assert_eq!(deal["Who"], Value::Null);
    assert_eq!(out.records[2]["What"], Value::Null);

    let out = run(&w.db, "SELECT Id FROM Task WHERE What.Type = 'Opportunity'");
    assert_eq!(out.total_size, 1);
    let out = run(&w.db, "SELECT Id FROM Task WHERE What.Type IN ('account', 'Case')");
    assert_eq!(out.total_size, 1);
    let out = run(&w.db, &format!("SELECT Id FROM Task WHERE WhatId = '{}'", &w.opp[..15]));
    assert_eq!(out.total_size, 1);

    let e = fail(&w.db, "SELECT What.Foo__c FROM Task");
    assert_eq!(e.code, "INVALID_FIELD");
    assert!(e.message.ends_with(&format!("No such column 'Foo__c' on entity 'Name'. {TAIL}")), "{}", e.message);
    let e = fail(&w.db, "SELECT What.Owner.Name FROM Task");
    assert_eq!(e.code, "INVALID_FIELD");
    assert!(e.message.contains("Didn't understand relationship 'Owner' in field path."), "{}", e.message);
}

#[test]
fn count_queries() {
    let w = world();
    let out = run(&w.db, "SELECT COUNT() FROM Account");
    assert_eq!(out, QueryOutput { total_size: 5, records: vec![] });
    assert_eq!(run_with(&w.db, "SELECT count() FROM Account", true).unwrap().total_size, 6);
    assert_eq!(run(&w.db, "SELECT COUNT() FROM Account WHERE NumberOfEmployees = 5").total_size, 2);
    assert_eq!(run(&w.db, "SELECT COUNT() FROM Account LIMIT 3").total_size, 3);
    assert_eq!(run(&w.db, "SELECT COUNT() FROM Account ORDER BY Name LIMIT 10 OFFSET 4").total_size, 1);
    assert_eq!(run(&w.db, "SELECT COUNT() FROM Lead").total_size, 0);
}

// ---- errors ----------------------------------------------------------------------------------

#[test]
fn unknown_object_is_invalid_type() {
    let w = world();
    let e = fail(&w.db, "SELECT Id FROM Nope__c");
    assert_eq!(e.code, "INVALID_TYPE");
    assert_eq!(
        e.message,
        "\nSELECT Id FROM Nope__c\n               ^\nERROR at Row:1:Column:16\nsObject type 'Nope__c' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names."
    );
}

#[test]
fn unknown_field_message_matches_salesforce() {
    let w = world();
    let e = fail(&w.db, "SELECT Id, Foo__c FROM Account");
    assert_eq!(e.code, "INVALID_FIELD");
    assert_eq!(
        e.message,
        format!(
            "\nSELECT Id, Foo__c FROM Account\n           ^\nERROR at Row:1:Column:12\nNo such column 'Foo__c' on entity 'Account'. {TAIL}"
        )
    );
    // Unknown fields are found in WHERE and ORDER BY too, and on parents.
    for q in [
        "SELECT Id FROM Account WHERE Foo__c = 1",
        "SELECT Id FROM Account ORDER BY Foo__c",
        "SELECT Owner.Foo__c FROM Account",
        "SELECT Owner FROM Account",
    ] {
        assert_eq!(fail(&w.db, q).code, "INVALID_FIELD", "{q}");
    }
    let e = fail(&w.db, "SELECT Owner.Foo__c FROM Account");
    assert!(e.message.contains("No such column 'Foo__c' on entity 'User'"), "{}", e.message);
    let e = fail(&w.db, "SELECT Id FROM Contact WHERE Acount.Name = 'x'");
    assert!(
        e.message.ends_with("ERROR at Row:1:Column:30\nDidn't understand relationship 'Acount' in field path. If you are attempting to use a custom relationship, be sure to append the '__r' after the custom relationship name. Please reference your WSDL or the describe call for the appropriate names."),
        "{}",
        e.message
    );
}

#[test]
fn long_lines_show_a_window_and_rows_count_newlines() {
    let w = world();
    let q = "SELECT Id, Name, Industry, Phone, Website, Type, AccountNumber, BillingCity, BillingCountry, \
             Bogus__c FROM Account";
    let e = fail(&w.db, q);
    let lines: Vec<&str> = e.message.split('\n').collect();
    assert_eq!(lines[0], "");
    let caret = lines[2].find('^').unwrap();
    assert!(lines[1][caret..].starts_with("Bogus__c"), "{lines:?}");
    assert!(lines[1].len() < q.len());
    assert_eq!(lines[3], format!("ERROR at Row:1:Column:{}", q.find("Bogus__c").unwrap() + 1));

    let e = fail(&w.db, "SELECT Id\n  FROM Account\n WHERE  Bogus__c = 1");
    assert!(e.message.starts_with("\n WHERE  Bogus__c = 1\n        ^\nERROR at Row:3:Column:9\n"), "{}", e.message);
}

#[test]
fn duplicate_fields_are_refused() {
    let w = world();
    let e = fail(&w.db, "SELECT Id, Name, name FROM Account");
    assert_eq!(e, SoqlError { code: "INVALID_FIELD", message: "duplicate field selected: name".into() });
    assert_eq!(fail(&w.db, "SELECT Owner.Name, owner.NAME FROM Account").code, "INVALID_FIELD");
    assert_eq!(fail(&w.db, "SELECT Name, Account.Name FROM Account").code, "INVALID_FIELD");
    // Same leaf name through different relationships is fine.
    run(&w.db, "SELECT Name, Owner.Name, Parent.Name FROM Account");
}

#[test]
fn wrong_literal_types_are_refused_like_salesforce() {
    let w = world();
    let cases = [
        (
            "SELECT Id FROM Account WHERE CreatedDate > 2024-05-01",
            "INVALID_FIELD",
            "value of filter criterion for field 'CreatedDate' must be of type dateTime and should not be enclosed in quotes",
        ),
        (
            "SELECT Id FROM Account WHERE CreatedDate > '2024-05-01T00:00:00Z'",
            "INVALID_FIELD",
            "value of filter criterion for field 'CreatedDate' must be of type dateTime and should not be enclosed in quotes",
        ),
        (
            "SELECT Id FROM Account WHERE Renewal_Date__c = 2024-05-01T00:00:00Z",
            "INVALID_FIELD",
            "value of filter criterion for field 'Renewal_Date__c' must be of type date and should not be enclosed in quotes",
        ),
        (
            "SELECT Id FROM Account WHERE NumberOfEmployees = '5'",
            "INVALID_FIELD",
            "value of filter criterion for field 'NumberOfEmployees' must be of type double and should not be enclosed in quotes",
        ),
        (
            "SELECT Id FROM Account WHERE IsDeleted = 'false'",
            "INVALID_FIELD",
            "value of filter criterion for field 'IsDeleted' must be of type boolean and should not be enclosed in quotes",
        ),
        (
            "SELECT Id FROM Account WHERE Name = 5",
            "INVALID_FIELD",
            "value of filter criterion for field 'Name' must be of type string and should be enclosed in quotes",
        ),
        (
            "SELECT Id FROM Account WHERE Name = TODAY",
            "INVALID_FIELD",
            "value of filter criterion for field 'Name' must be of type string and should be enclosed in quotes",
        ),
        ("SELECT Id FROM Account WHERE Id = 'abc'", "INVALID_QUERY_FILTER_OPERATOR", "invalid ID field: abc"),
        (
            "SELECT Id FROM Account WHERE OwnerId IN ('005000000000001', 'x')",
            "INVALID_QUERY_FILTER_OPERATOR",
            "invalid ID field: x",
        ),
        (
            "SELECT Id FROM Account WHERE Id LIKE '001%'",
            "INVALID_QUERY_FILTER_OPERATOR",
            "invalid operator on id field",
        ),
        (
            "SELECT Id FROM Account WHERE IsDeleted > false",
            "INVALID_QUERY_FILTER_OPERATOR",
            "invalid operator on boolean field",
        ),
        (
            "SELECT Id FROM Account WHERE Description = 'x'",
            "INVALID_FIELD",
            "field 'Description' can not be filtered in a query call",
        ),
        (
            "SELECT Id FROM Account ORDER BY Description",
            "INVALID_FIELD",
            "field 'Description' can not be sorted in a query call",
        ),
        ("SELECT Id FROM Account WHERE Name > null", "MALFORMED_QUERY", "unexpected token: 'null'"),
    ];
    for (q, code, reason) in cases {
        let e = fail(&w.db, q);
        assert_eq!(e.code, code, "{q}: {}", e.message);
        assert!(e.message.ends_with(reason), "{q}: {}", e.message);
        assert!(e.message.contains("ERROR at Row:1:Column:"), "{q}: {}", e.message);
    }
    let e = fail(&w.db, "SELECT Id FROM Account WHERE CreatedDate > 2024-05-01");
    assert!(e.message.contains("Column:44"), "{}", e.message);
}

#[test]
fn offset_is_capped_at_2000() {
    let w = world();
    let e = fail(&w.db, "SELECT Id FROM Account LIMIT 10 OFFSET 2001");
    assert_eq!(
        e,
        SoqlError { code: "NUMBER_OUTSIDE_VALID_RANGE", message: "Maximum SOQL offset allowed is 2000".into() }
    );
    assert_eq!(run(&w.db, "SELECT Id FROM Account OFFSET 2000").total_size, 0);
}

#[test]
fn syntax_errors_are_malformed_query() {
    let w = world();
    for q in [
        "SELECT Id FROM Account;",
        "SELECT Id FROM Account WHERE Name = 'a' AND Name = 'b' OR Name = 'c'",
        "SELECT FIELDS(ALL) FROM Account LIMIT 10",
        "SELECT Industry, COUNT(Id) FROM Account GROUP BY Industry",
        "SELECT Id FROM Account WHERE CreatedDate = THIS_FISCAL_QUARTER",
        "SELECT Id FROM Account WHERE CreatedDate = LAST_N_WEEKS:2",
        "SELECT Id FROM Account WHERE Name = \"Acme\"",
        "select id from account where name = 'acme' limit",
    ] {
        let e = fail(&w.db, q);
        assert_eq!(e.code, "MALFORMED_QUERY", "{q}");
        assert!(e.message.contains("unexpected token: "), "{q}: {}", e.message);
    }
}

// ---- filters ---------------------------------------------------------------------------------

#[test]
fn text_comparisons_ignore_case_and_nulls_satisfy_not_equal() {
    let w = world();
    assert_eq!(names(&w.db, "SELECT Name FROM Account WHERE Name = 'BETA CORP'"), ["beta corp"]);
    assert_eq!(names(&w.db, "SELECT Name FROM Account WHERE Industry = 'technology'"), ["Acme"]);
    // != and NOT IN keep records where the field is unset, as SOQL does.
    assert_eq!(
        names(&w.db, "SELECT Name FROM Account WHERE Industry != 'Technology'"),
        ["beta corp", "Gamma", "O'Brien \"Ltd\"\\", "100% Pure_Co"]
    );
    assert_eq!(
        names(&w.db, "SELECT Name FROM Account WHERE Industry NOT IN ('Technology', 'retail')"),
        ["beta corp", "Gamma", "O'Brien \"Ltd\"\\"]
    );
    assert_eq!(
        names(&w.db, "SELECT Name FROM Account WHERE Industry IN ('Technology', 'retail')"),
        ["Acme", "100% Pure_Co"]
    );
    assert_eq!(
        names(&w.db, "SELECT Name FROM Account WHERE Industry IN ('Banking', null)"),
        ["beta corp", "Gamma", "O'Brien \"Ltd\"\\"]
    );
    assert_eq!(names(&w.db, "SELECT Name FROM Account WHERE Industry = null"), ["beta corp", "O'Brien \"Ltd\"\\"]);
    assert_eq!(names(&w.db, "SELECT Name FROM Account WHERE Industry <> null").len(), 3);
    assert_eq!(names(&w.db, "SELECT Name FROM Account WHERE Name > 'b' AND Name < 'H'"), ["beta corp", "Gamma"]);
    assert_eq!(names(&w.db, "SELECT Name FROM Account WHERE Industry < 'Z'").len(), 3);
}

#[test]
fn string_escapes() {
    let w = world();
    assert_eq!(names(&w.db, r#"SELECT Name FROM Account WHERE Name = 'O\'Brien \"Ltd\"\\'"#), ["O'Brien \"Ltd\"\\"]);
    assert_eq!(names(&w.db, r#"SELECT Name FROM Account WHERE Name = 'O\'Brien "Ltd"\\'"#), ["O'Brien \"Ltd\"\\"]);
    let e = fail(&w.db, r"SELECT Name FROM Account WHERE Name = 'a\zb'");
    assert_eq!(e.code, "MALFORMED_QUERY");
}

#[test]
fn like_patterns() {
    let w = world();
    assert_eq!(names(&w.db, "SELECT Name FROM Account WHERE Name LIKE 'a%'"), ["Acme"]);
    assert_eq!(names(&w.db, "SELECT Name FROM Account WHERE Name LIKE '%CORP'"), ["beta corp"]);
    assert_eq!(names(&w.db, "SELECT Name FROM Account WHERE Name LIKE '%m%'"), ["Acme", "Gamma"]);
    assert_eq!(names(&w.db, "SELECT Name FROM Account WHERE Name LIKE 'g_mm_'"), ["Gamma"]);
    assert_eq!(names(&w.db, "SELECT Name FROM Account WHERE Name LIKE 'g_m'").len(), 0);
    assert_eq!(names(&w.db, r"SELECT Name FROM Account WHERE Name LIKE '100\% Pure\_Co'"), ["100% Pure_Co"]);
    assert_eq!(names(&w.db, r"SELECT Name FROM Account WHERE Name LIKE '%\%%'"), ["100% Pure_Co"]);
    assert_eq!(names(&w.db, r"SELECT Name FROM Account WHERE Name LIKE '%\_%'"), ["100% Pure_Co"]);
    assert_eq!(names(&w.db, "SELECT Name FROM Account WHERE Name LIKE '%_%'").len(), 5);
    // Null never matches LIKE, and NOT LIKE (written NOT x LIKE y) keeps nulls.
    assert_eq!(names(&w.db, "SELECT Name FROM Account WHERE Industry LIKE '%'").len(), 3);
    assert_eq!(names(&w.db, "SELECT Name FROM Account WHERE NOT Industry LIKE 'tech%'").len(), 4);
    assert_eq!(names(&w.db, "SELECT Name FROM Account WHERE Plan_Tier__c LIKE 'gr%'"), ["Acme"]);
}

#[test]
fn numbers() {
    let w = world();
    assert_eq!(names(&w.db, "SELECT Name FROM Account WHERE NumberOfEmployees > 5"), ["Acme"]);
    assert_eq!(names(&w.db, "SELECT Name FROM Account WHERE NumberOfEmployees >= 5").len(), 3);
    assert_eq!(names(&w.db, "SELECT Name FROM Account WHERE NumberOfEmployees = 100.0"), ["Acme"]);
    assert_eq!(names(&w.db, "SELECT Name FROM Account WHERE NumberOfEmployees IN (5, 100)").len(), 3);
    assert_eq!(names(&w.db, "SELECT Name FROM Account WHERE AnnualRevenue < 0"), ["Gamma"]);
    assert_eq!(names(&w.db, "SELECT Name FROM Account WHERE AnnualRevenue = -20"), ["Gamma"]);
    assert_eq!(names(&w.db, "SELECT Name FROM Account WHERE AnnualRevenue > 1500000.25"), ["Acme"]);
    // Unset numbers satisfy != but no ordering comparison.
    assert_eq!(
        names(&w.db, "SELECT Name FROM Account WHERE NumberOfEmployees != 5"),
        ["Acme", "Gamma", "100% Pure_Co"]
    );
    assert_eq!(names(&w.db, "SELECT Name FROM Account WHERE NumberOfEmployees < 1000").len(), 3);
    let out = run(&w.db, "SELECT NumberOfEmployees, AnnualRevenue FROM Account WHERE Name = 'Acme'");
    assert_eq!(out.records[0]["NumberOfEmployees"], json!(100));
    assert_eq!(out.records[0]["AnnualRevenue"], json!(1500000.5));
}

#[test]
fn booleans() {
    let w = world();
    assert_eq!(run(&w.db, "SELECT Id FROM Account WHERE IsDeleted = false").total_size, 5);
    assert_eq!(run(&w.db, "SELECT Id FROM Account WHERE IsDeleted = TRUE").total_size, 0);
    assert_eq!(run_with(&w.db, "SELECT Id FROM Account WHERE IsDeleted = true", true).unwrap().total_size, 1);
    assert_eq!(run(&w.db, "SELECT Id FROM Opportunity WHERE IsClosed != true").total_size, 1);
}

#[test]
fn dates_and_datetimes() {
    let w = world();
    let q = |cond: &str| names(&w.db, &format!("SELECT Name FROM Account WHERE {cond}"));
    assert_eq!(q("Renewal_Date__c = 2024-05-20"), ["Acme"]);
    assert_eq!(q("Renewal_Date__c < 2024-05-15"), ["beta corp"]);
    assert_eq!(q("Renewal_Date__c >= 2024-05-15"), ["Acme", "Gamma"]);
    assert_eq!(q("CreatedDate >= 2024-05-14T09:00:00Z"), ["beta corp", "Gamma"]);
    assert_eq!(q("CreatedDate > 2024-05-14T09:00:00Z"), ["Gamma"]);
    // The same instant written with an offset.
    assert_eq!(q("CreatedDate = 2024-05-14T11:00:00+02:00"), ["beta corp"]);
    assert_eq!(q("CreatedDate = 2024-05-14T09:00:00.000+0000"), ["beta corp"]);
    assert_eq!(q("CreatedDate < 2024-03-02T00:00:00.001Z"), ["O'Brien \"Ltd\"\\", "100% Pure_Co"]);
    // Relative literals: today is 2024-05-15 (UTC).
    assert_eq!(q("Renewal_Date__c = TODAY"), ["Gamma"]);
    assert_eq!(q("CreatedDate = TODAY"), ["Gamma"]);
    assert_eq!(q("CreatedDate = YESTERDAY"), ["beta corp"]);
    assert_eq!(q("CreatedDate < YESTERDAY"), ["Acme", "O'Brien \"Ltd\"\\", "100% Pure_Co"]);
    assert_eq!(q("CreatedDate >= yesterday"), ["beta corp", "Gamma"]);
    assert_eq!(q("CreatedDate = LAST_N_DAYS:14"), ["Acme", "beta corp", "Gamma"]);
    assert_eq!(q("CreatedDate = LAST_N_DAYS:13"), ["beta corp", "Gamma"]);
    assert_eq!(q("Renewal_Date__c = NEXT_N_DAYS:5"), ["Acme"]);
    assert_eq!(q("Renewal_Date__c = NEXT_N_DAYS:4").len(), 0);
    assert_eq!(q("Renewal_Date__c > TODAY"), ["Acme"]);
    assert_eq!(q("Renewal_Date__c <= TODAY"), ["beta corp", "Gamma"]);
    assert_eq!(q("Renewal_Date__c = TOMORROW").len(), 0);
    assert_eq!(q("Renewal_Date__c = THIS_MONTH"), ["Acme", "Gamma"]);
    assert_eq!(q("Renewal_Date__c = LAST_MONTH"), ["beta corp"]);
    assert_eq!(q("Pendo_Last_Active__c = TODAY"), ["beta corp"]);
    assert_eq!(q("Pendo_Last_Active__c != TODAY"), ["Acme", "Gamma", "O'Brien \"Ltd\"\\", "100% Pure_Co"]);
    assert_eq!(q("CreatedDate = THIS_YEAR").len(), 5);
    assert_eq!(q("CreatedDate IN (TODAY, YESTERDAY)"), ["beta corp", "Gamma"]);
    let out = run(&w.db, "SELECT CreatedDate, Renewal_Date__c FROM Account WHERE Name = 'Acme'");
    assert_eq!(out.records[0]["CreatedDate"], json!("2024-05-01T09:00:00.000+0000"));
    assert_eq!(out.records[0]["Renewal_Date__c"], json!("2024-05-20"));
}

#[test]
fn ids_match_in_15_and_18_characters() {
    let w = world();
    let q = |cond: String| names(&w.db, &format!("SELECT Name FROM Account WHERE {cond}"));
    assert_eq!(q(format!("Id = '{}'", w.acme)), ["Acme"]);
    assert_eq!(q(format!("Id = '{}'", &w.acme[..15])), ["Acme"]);
    // The checksum is case-insensitive, the 15-character body is not.
    assert_eq!(q(format!("Id = '{}{}'", &w.acme[..15], w.acme[15..].to_lowercase())), ["Acme"]);
    let swapped: String = w.acme.chars().map(|c| if c == 'd' { 'D' } else { c }).collect();
    assert!(q(format!("Id = '{}'", &swapped[..15])).is_empty());
    assert_eq!(q(format!("Id IN ('{}', '{}')", w.beta, &w.acme[..15])), ["Acme", "beta corp"]);
    assert_eq!(q(format!("Id NOT IN ('{}', '{}')", w.beta, w.acme)).len(), 3);
    assert_eq!(q(format!("Id != '{}'", w.acme)).len(), 4);
    assert_eq!(q(format!("ParentId = '{}'", w.acme)), ["Gamma"]);
    assert_eq!(q("ParentId != null".into()), ["Gamma"]);
    assert_eq!(q(format!("OwnerId = '{}'", INTEGRATION_USER_ID)).len(), 5);
    // A deleted record is only visible to queryAll, also through the Id fast path.
    assert!(q(format!("Id = '{}'", w.gone)).is_empty());
    let out = run_with(&w.db, &format!("SELECT Name, IsDeleted FROM Account WHERE Id = '{}'", w.gone), true).unwrap();
    assert_eq!(col(&out, "IsDeleted"), vec![json!(true)]);
    assert_eq!(q(format!("Id = '{}' AND Name = 'nope'", w.acme)).len(), 0);
    assert_eq!(q(format!("Id = '{}' OR Name = 'Gamma'", w.acme)), ["Acme", "Gamma"]);
}

#[test]
fn external_id_lookups() {
    let w = world();
    assert_eq!(names(&w.db, "SELECT Name FROM Account WHERE Pendo_Account_Id__c = 'ACME-1'"), ["Acme"]);
    assert!(names(&w.db, "SELECT Name FROM Account WHERE Pendo_Account_Id__c = 'gone-1'").is_empty());
    let out = run_with(&w.db, "SELECT Name FROM Account WHERE Pendo_Account_Id__c = 'gone-1'", true).unwrap();
    assert_eq!(col(&out, "Name"), vec![json!("Gone Inc")]);
    assert_eq!(
        names(&w.db, "SELECT Name FROM Account WHERE Pendo_Account_Id__c = 'acme-1' AND NumberOfEmployees > 1000")
            .len(),
        0
    );
}

#[test]
fn boolean_logic_and_parentheses() {
    let w = world();
    let q = |cond: &str| names(&w.db, &format!("SELECT Name FROM Account WHERE {cond}"));
    assert_eq!(q("(Name = 'Acme' OR Name = 'Gamma') AND Industry = 'Banking'"), ["Gamma"]);
    assert_eq!(q("Name = 'Acme' OR (Name = 'Gamma' AND Industry = 'Technology')"), ["Acme"]);
    assert_eq!(q("NOT Name = 'Acme' AND NumberOfEmployees = 5"), ["beta corp", "O'Brien \"Ltd\"\\"]);
    assert_eq!(q("NOT (Name = 'Acme' OR NumberOfEmployees = 5)"), ["Gamma", "100% Pure_Co"]);
    assert_eq!(q("((Name = 'Acme'))"), ["Acme"]);
    assert_eq!(q("Name = 'Acme' AND Industry = 'Technology' AND NumberOfEmployees = 100"), ["Acme"]);
    assert_eq!(q("Name = 'x' OR Name = 'y' OR Name = 'gamma'"), ["Gamma"]);
}

#[test]
fn keywords_and_whitespace_are_free_form() {
    let w = world();
    let out = run(
        &w.db,
        "  sElEcT\n\tName\r\n  fRoM   account\nwhere\nname   =\n'Acme'\n order   BY name   Asc  nulls  FIRST\nlimit 5 ",
    );
    assert_eq!(col(&out, "Name"), vec![json!("Acme")]);
    let out = run(&w.db, "SELECT Name FROM Account WHERE Name='Acme'AND(Industry!='x')");
    assert_eq!(out.total_size, 1);
}

// ---- ordering and paging -----------------------------------------------------------------------

#[test]
fn order_by() {
    let w = world();
    assert_eq!(
        names(&w.db, "SELECT Name FROM Account ORDER BY Name"),
        ["100% Pure_Co", "Acme", "beta corp", "Gamma", "O'Brien \"Ltd\"\\"]
    );
    assert_eq!(
        names(&w.db, "SELECT Name FROM Account ORDER BY Name DESC"),
        ["O'Brien \"Ltd\"\\", "Gamma", "beta corp", "Acme", "100% Pure_Co"]
    );
    // Nulls first ascending, last descending, unless told otherwise.
    assert_eq!(
        names(&w.db, "SELECT Name FROM Account ORDER BY Industry, Name")[..2],
        ["beta corp", "O'Brien \"Ltd\"\\"]
    );
    assert_eq!(
        names(&w.db, "SELECT Name FROM Account ORDER BY Industry DESC, Name")[3..],
        ["beta corp", "O'Brien \"Ltd\"\\"]
    );
    assert_eq!(
        names(&w.db, "SELECT Name FROM Account ORDER BY Industry NULLS LAST, Name"),
        ["Gamma", "100% Pure_Co", "Acme", "beta corp", "O'Brien \"Ltd\"\\"]
    );
    assert_eq!(
        names(&w.db, "SELECT Name FROM Account ORDER BY Industry DESC NULLS FIRST, Name DESC"),
        ["O'Brien \"Ltd\"\\", "beta corp", "Acme", "100% Pure_Co", "Gamma"]
    );
    // Numbers numerically; ties keep creation order (stable).
    assert_eq!(
        names(&w.db, "SELECT Name FROM Account ORDER BY NumberOfEmployees DESC NULLS LAST"),
        ["Acme", "beta corp", "O'Brien \"Ltd\"\\", "Gamma", "100% Pure_Co"]
    );
    // Picklists sort in their defined order: Free, Starter, Growth, Enterprise.
    assert_eq!(
        names(&w.db, "SELECT Name FROM Account WHERE Plan_Tier__c != null ORDER BY Plan_Tier__c"),
        ["beta corp", "Acme", "Gamma"]
    );
    assert_eq!(names(&w.db, "SELECT Name FROM Account ORDER BY CreatedDate DESC LIMIT 2"), ["Gamma", "beta corp"]);
    // Through a relationship.
    let out = run(&w.db, "SELECT Subject FROM Task ORDER BY What.Name NULLS LAST, Subject");
    assert_eq!(col(&out, "Subject"), vec![json!("Call Jane"), json!("Deal follow-up"), json!("Loose end")]);
    let out = run(&w.db, "SELECT LastName FROM Contact ORDER BY Account.Name DESC");
    assert_eq!(col(&out, "LastName"), vec![json!("Doe"), json!("Orphan")]);
}

#[test]
fn limit_and_offset() {
    let w = world();
    let all = names(&w.db, "SELECT Name FROM Account ORDER BY Name");
    let out = run(&w.db, "SELECT Name FROM Account ORDER BY Name LIMIT 2 OFFSET 1");
    assert_eq!(out.total_size, 2);
    assert_eq!(col(&out, "Name"), vec![json!(all[1]), json!(all[2])]);
    assert_eq!(run(&w.db, "SELECT Name FROM Account LIMIT 0").total_size, 0);
    assert_eq!(run(&w.db, "SELECT Name FROM Account OFFSET 4").total_size, 1);
    // Unsorted rows come in creation order.
    assert_eq!(names(&w.db, "SELECT Name FROM Account LIMIT 3"), ["Acme", "beta corp", "Gamma"]);
}

#[test]
fn query_all_includes_deleted() {
    let w = world();
    assert_eq!(run(&w.db, "SELECT Id FROM Account").total_size, 5);
    let out = run_with(&w.db, "SELECT Name, IsDeleted FROM Account WHERE IsDeleted = true", true).unwrap();
    assert_eq!(col(&out, "Name"), vec![json!("Gone Inc")]);
    assert_eq!(run_with(&w.db, "SELECT Id FROM Account", true).unwrap().total_size, 6);
    let _ = (&w.gamma, &w.opp);
}

#[test]
fn version_prefix_is_not_doubled() {
    let w = world();
    let out =
        execute(&parse("SELECT Id FROM Account LIMIT 1").unwrap(), &w.db, false, "v60.0", today(), now()).unwrap();
    assert_eq!(out.records[0]["attributes"]["url"], json!(format!("/services/data/v60.0/sobjects/Account/{}", w.acme)));
}

#[test]
fn custom_fields_added_later_are_queryable() {
    let mut w = world();
    let spec: crate::salesforce::schema::CustomFieldSpec =
        serde_json::from_value(json!({"name": "Tier__c", "type": "string"})).unwrap();
    w.db.schema.add_custom_field("Account", spec).unwrap();
    let q = parse("SELECT Tier__c FROM Account WHERE Tier__c = null").unwrap();
    let out = execute(&q, &w.db, false, "62.0", today(), now()).unwrap();
    assert_eq!(out.total_size, 5);
}

// ---- properties --------------------------------------------------------------------------------

/// Escapes text for a SOQL string literal, as a careful client does.
fn soql_escape(s: &str, for_like: bool) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '%' if for_like => out.push_str("\\%"),
            '_' if for_like => out.push_str("\\_"),
            c => out.push(c),
        }
    }
    out
}

fn tricky_text() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        4 => any::<char>(),
        1 => prop::sample::select(vec!['\'', '"', '\\', '%', '_', '\n', '\r', '\t', '\u{8}', '\u{c}', 'a', 'A']),
    ];
    prop::collection::vec(ch, 1..24).prop_map(|v| v.into_iter().collect())
}

/// Fragments of SOQL, so that random queries get past the first token often enough to
/// exercise the whole parser and planner.
fn soql_soup() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "SELECT",
        "FROM",
        "WHERE",
        "AND",
        "OR",
        "NOT",
        "IN",
        "LIKE",
        "ORDER",
        "BY",
        "LIMIT",
        "OFFSET",
        "ASC",
        "DESC",
        "NULLS",
        "FIRST",
        "LAST",
        "COUNT()",
        "Id",
        "Name",
        "Account",
        "Contact",
        "Task",
        "Owner.Name",
        "What.Name",
        "What.Type",
        "Account.Owner.Email",
        "CreatedDate",
        "Renewal_Date__c",
        "NumberOfEmployees",
        "IsDeleted",
        ",",
        "(",
        ")",
        "=",
        "!=",
        "<",
        ">=",
        "'a%'",
        "'x\\'y'",
        "5",
        "-1.5",
        "2024-05-01",
        "2024-05-01T00:00:00Z",
        "TODAY",
        "LAST_N_DAYS:3",
        "null",
        "true",
        ";",
        ":",
        ".",
        "'",
        "Foo__c",
        "Nope__c",
    ]);
    prop::collection::vec(piece, 0..16).prop_map(|v| v.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn parser_never_panics(s in "\\PC{0,80}") {
        let _ = parse(&s);
    }

    #[test]
    fn parser_never_panics_on_any_bytes(s in any::<String>()) {
        let _ = parse(&s);
    }

    #[test]
    fn random_queries_never_panic(s in soql_soup()) {
        let db = world().db;
        if let Ok(q) = parse(&format!("SELECT {s}")) {
            let _ = execute(&q, &db, false, "62.0", today(), now());
        }
        if let Ok(q) = parse(&format!("SELECT Id, Name FROM Account WHERE {s}")) {
            let _ = execute(&q, &db, true, "62.0", today(), now());
        }
    }

    #[test]
    fn limited_order_matches_a_full_stable_sort(
        rows in prop::collection::vec((prop::option::of(0i64..4), prop::option::of(0usize..3)), 0..40),
        limit in 0usize..45,
        offset in 0usize..45,
        desc in any::<bool>(),
    ) {
        let mut db = Db::new();
        let c = at("2024-05-01T00:00:00Z");
        let industries = ["Banking", "Retail", "Media"];
        for (i, (emp, ind)) in rows.iter().enumerate() {
            let mut b = json!({"Name": format!("n{i:02}")});
            if let Some(e) = emp {
                b["NumberOfEmployees"] = json!(e);
            }
            if let Some(k) = ind {
                b["Industry"] = json!(industries[*k]);
            }
            db.create("Account", &body(b), &c).unwrap();
        }
        let dir = if desc { "DESC" } else { "ASC" };
        let order = format!("ORDER BY NumberOfEmployees {dir}, Industry NULLS LAST");
        let all = names(&db, &format!("SELECT Name FROM Account {order}"));
        // The full ordering, computed independently.
        let mut expected: Vec<(Option<i64>, Option<usize>, usize)> =
            rows.iter().enumerate().map(|(i, (e, k))| (*e, *k, i)).collect();
        expected.sort_by(|a, b| {
            let first = match (a.0, b.0) {
                (None, None) => std::cmp::Ordering::Equal,
                (None, Some(_)) => if desc { std::cmp::Ordering::Greater } else { std::cmp::Ordering::Less },
                (Some(_), None) => if desc { std::cmp::Ordering::Less } else { std::cmp::Ordering::Greater },
                (Some(x), Some(y)) => if desc { y.cmp(&x) } else { x.cmp(&y) },
            };
            let name = |k: Option<usize>| k.map(|k| industries[k]);
            let second = match (name(a.1), name(b.1)) {
                (None, None) => std::cmp::Ordering::Equal,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(_), None) => std::cmp::Ordering::Less,
                (Some(x), Some(y)) => x.cmp(y),
            };
            first.then(second)
        });
        let expected: Vec<String> = expected.iter().map(|(_, _, i)| format!("n{i:02}")).collect();
        prop_assert_eq!(&all, &expected);
        let page = names(&db, &format!("SELECT Name FROM Account {order} LIMIT {limit} OFFSET {offset}"));
        let want: Vec<String> = expected.iter().skip(offset).take(limit).cloned().collect();
        prop_assert_eq!(page, want);
    }

    #[test]
    fn escaped_literals_round_trip(target in tricky_text(), decoy_char in any::<char>()) {
        let mut db = Db::new();
        let c = at("2024-05-01T00:00:00Z");
        let decoys = [
            format!("{target}{decoy_char}"),
            format!("{decoy_char}{target}"),
            target.chars().skip(1).collect::<String>(),
            target.replace(['%', '_', '\'', '\\'], "x"),
        ];
        let id = db.create("Account", &body(json!({"Name": target})), &c).unwrap();
        for d in decoys.iter().filter(|d| !d.is_empty() && d.to_lowercase() != target.to_lowercase()) {
            db.create("Account", &body(json!({"Name": d})), &c).unwrap();
        }
        let q = format!("SELECT Id, Name FROM Account WHERE Name = '{}'", soql_escape(&target, false));
        let out = execute(&parse(&q).unwrap(), &db, false, "62.0", today(), now()).unwrap();
        prop_assert_eq!(col(&out, "Id"), vec![json!(id)]);
        prop_assert_eq!(col(&out, "Name"), vec![json!(target)]);
        let q = format!("SELECT Id FROM Account WHERE Name LIKE '{}'", soql_escape(&target, true));
        let out = execute(&parse(&q).unwrap(), &db, false, "62.0", today(), now()).unwrap();
        prop_assert_eq!(col(&out, "Id"), vec![json!(id)]);
    }
}
