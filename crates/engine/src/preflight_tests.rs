//! Preflight's checks against hand-made describes, on the annotated example config.

use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::config::{STARTER, load_str};

fn field(name: &str, kind: &str) -> Value {
    json!({"name": name, "type": kind, "createable": true, "updateable": true, "picklistValues": []})
}

fn object(name: &str, fields: Vec<Value>) -> Option<Arc<SObjectDescribe>> {
    let d: SObjectDescribe = serde_json::from_value(json!({"name": name, "fields": fields})).unwrap();
    Some(Arc::new(d))
}

/// The Account the example's engagement workflow expects, with `edit` applied to its fields.
fn account(edit: impl Fn(&mut Vec<Value>)) -> Describes {
    let mut fields = vec![
        field("Id", "id"),
        field("Name", "string"),
        field("Website", "url"),
        field("Pendo_Account_Id__c", "string"),
    ];
    for name in ["Active_Visitors", "Active_Days", "Events", "Minutes", "Engagement_Score"] {
        fields.push(field(&format!("Pendo_{name}__c"), "double"));
    }
    for name in ["Feature_Adoption", "Guide_Completion"] {
        fields.push(field(&format!("Pendo_{name}__c"), "percent"));
    }
    fields.push(field("Pendo_Last_Active__c", "datetime"));
    fields.push(field("Pendo_Engagement_Updated__c", "datetime"));
    edit(&mut fields);
    Describes::from([("account".to_owned(), object("Account", fields))])
}

fn problems(text: &str, workflow: &str, describes: &Describes) -> Vec<Problem> {
    let config = load_str(text, "t.yaml").unwrap();
    let w = &config.workflows[workflow];
    check(&config, workflow, &requirements(w), describes)
}

/// The 1-based line of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn the_example_passes_against_a_matching_org() {
    assert_eq!(problems(STARTER, "engagement", &account(|_| {})), vec![]);
}

#[test]
fn a_misspelt_field_is_located_and_a_near_name_offered() {
    let text = STARTER.replace("minutes: Pendo_Minutes__c", "minutes: Pendo_Minuts__c");
    let found = problems(&text, "engagement", &account(|_| {}));
    assert_eq!(found.len(), 1, "{found:?}");
    let p = &found[0];
    assert_eq!((p.object.as_str(), p.field.as_deref()), ("Account", Some("Pendo_Minuts__c")));
    assert_eq!(p.key, "workflows.engagement.fields.minutes");
    assert_eq!(p.line, Some(line_of(&text, "minutes: Pendo_Minuts__c")));
    assert_eq!(p.did_you_mean.as_deref(), Some("Pendo_Minutes__c"));
    let shown = p.to_string();
    assert!(shown.starts_with(&format!("t.yaml:{}:", line_of(&text, "Pendo_Minuts__c"))), "{shown}");
    assert!(shown.contains("did you mean Pendo_Minutes__c?"), "{shown}");
}

#[test]
fn no_near_name_is_offered_for_a_name_far_from_all() {
    let text = STARTER.replace("minutes: Pendo_Minutes__c", "minutes: Something_Else_Entirely__c");
    let found = problems(&text, "engagement", &account(|_| {}));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].did_you_mean, None);
}

#[test]
fn a_field_the_user_cannot_update_is_a_problem() {
    let describes = account(|fields| {
        for f in fields.iter_mut().filter(|f| f["name"] == "Pendo_Events__c") {
            f["updateable"] = json!(false);
        }
    });
    let found = problems(STARTER, "engagement", &describes);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].field.as_deref(), Some("Pendo_Events__c"));
    assert!(found[0].message.contains("not updateable"), "{}", found[0].message);
}

#[test]
fn a_value_of_the_wrong_type_is_a_problem() {
    let describes = account(|fields| {
        for f in fields.iter_mut().filter(|f| f["name"] == "Pendo_Last_Active__c") {
            f["type"] = json!("double");
        }
        for f in fields.iter_mut().filter(|f| f["name"] == "Pendo_Events__c") {
            f["type"] = json!("string");
        }
    });
    let found = problems(STARTER, "engagement", &describes);
    let named: Vec<_> = found.iter().map(|p| (p.field.as_deref().unwrap(), p.message.as_str())).collect();
    assert_eq!(named.len(), 2, "{found:?}");
    assert!(named.iter().any(|(f, m)| *f == "Pendo_Events__c" && m.contains("needs a number")), "{named:?}");
    assert!(named.iter().any(|(f, m)| *f == "Pendo_Last_Active__c" && m.contains("needs a date")), "{named:?}");
}

fn nps_org(priority_values: &[&str], key_external: bool) -> Describes {
    let mut contact = vec![field("Pendo_Visitor_Id__c", "string"), field("NPS_Score__c", "double")];
    contact.push(field("NPS_Comment__c", "textarea"));
    contact.push(field("NPS_Date__c", "datetime"));
    let account = vec![field("Health_Score__c", "double"), field("Pendo_Engagement_Score__c", "double")];
    let mut priority = field("Priority", "picklist");
    priority["restrictedPicklist"] = json!(true);
    priority["picklistValues"] =
        priority_values.iter().map(|v| json!({"value": v, "active": true, "defaultValue": false})).collect();
    let mut key = field("Usagesync_Key__c", "string");
    key["externalId"] = json!(key_external);
    let task = vec![priority, key, field("ActivityDate", "date")];
    Describes::from([
        ("contact".to_owned(), object("Contact", contact)),
        ("account".to_owned(), object("Account", account)),
        ("task".to_owned(), object("Task", task)),
    ])
}

#[test]
fn a_fixed_picklist_value_must_be_one_of_the_fields_values() {
    assert_eq!(problems(STARTER, "nps", &nps_org(&["High", "Normal", "Low"], true)), vec![]);
    // An org whose Task priorities were renamed.
    let found = problems(STARTER, "nps", &nps_org(&["Urgent", "Normal", "Low"], true));
    assert_eq!(found.len(), 1, "{found:?}");
    let p = &found[0];
    assert_eq!((p.object.as_str(), p.field.as_deref(), p.usage), ("Task", Some("Priority"), Use::Create));
    assert_eq!(p.line, Some(line_of(STARTER, "priority: High")));
    assert_eq!(p.did_you_mean, None);
    assert!(p.message.contains("`High` is not an active value of the restricted picklist"), "{}", p.message);
}

#[test]
fn a_stage_the_org_spells_otherwise_gets_a_near_value() {
    let mut stage = field("StageName", "picklist");
    stage["picklistValues"] =
        ["Prospecting", "Qualifcation", "Needs Analysis"].iter().map(|v| json!({"value": v, "active": true})).collect();
    let mut fields = vec![stage];
    for name in ["Active_Users", "Features_Explored", "Guides_Completed"] {
        fields.push(field(&format!("Trial_{name}__c"), "double"));
    }
    fields.push(field("Trial_Last_Active__c", "datetime"));
    fields.push(field("Trial_Drop_Off_Step__c", "string"));
    let mut describes = account(|_| {});
    describes.insert("opportunity".into(), object("Opportunity", fields));
    let text = STARTER.replace("enabled: false", "enabled: true");
    let found = problems(&text, "trials", &describes);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].key, "workflows.trials.trial.stages[0].stage");
    assert_eq!(found[0].did_you_mean.as_deref(), Some("Qualifcation"));
}

#[test]
fn an_upsert_key_must_be_an_external_id() {
    let found = problems(STARTER, "nps", &nps_org(&["High"], false));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].field.as_deref(), Some("Usagesync_Key__c"));
    assert_eq!(found[0].usage, Use::Key);
    assert!(found[0].message.contains("not an External ID"), "{}", found[0].message);
}

#[test]
fn a_missing_object_is_reported_once() {
    let mut describes = nps_org(&["High"], true);
    describes.insert("task".into(), None);
    let found = problems(STARTER, "nps", &describes);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].object.as_str(), found[0].field.as_deref()), ("Task", None));
}

#[test]
fn a_relationship_path_needs_its_relationship() {
    let text = STARTER.replace("CSM__r.Name", "CMS__r.Name");
    let mut fields = vec![field("Pendo_Account_Id__c", "string"), field("Plan_Tier__c", "picklist")];
    fields.push(field("Renewal_Date__c", "date"));
    let mut csm = field("CSM__c", "reference");
    csm["relationshipName"] = json!("CSM__r");
    fields.push(csm);
    let describes = Describes::from([("account".to_owned(), object("Account", fields))]);
    assert_eq!(problems(STARTER, "attributes-to-pendo", &describes), vec![]);
    let found = problems(&text, "attributes-to-pendo", &describes);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].did_you_mean.as_deref(), Some("CSM__r.Name"));
}

#[test]
fn the_quarantine_strips_written_fields_with_problems_only() {
    let text = STARTER.replace("minutes: Pendo_Minutes__c", "minutes: Pendo_Minuts__c");
    let mut found = problems(&text, "engagement", &account(|_| {}));
    // A read-only problem is reported but strips nothing.
    found.push(Problem { field: Some("Website".into()), usage: Use::Read, ..found[0].clone() });
    let q = Quarantine::new(found);
    let mut record: Map<String, Value> =
        [("pendo_minuts__c", json!(3)), ("Pendo_Events__c", json!(4)), ("Website", json!("x"))]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
    assert_eq!(q.strip("account", &mut record), vec!["pendo_minuts__c".to_owned()]);
    assert_eq!(record.keys().collect::<Vec<_>>(), ["Pendo_Events__c", "Website"]);
    assert!(q.reason("Account", "Pendo_Minuts__c").is_some_and(|r| r.contains("did you mean")));
    assert!(!q.holds("Contact", "Pendo_Minuts__c"));
}

#[test]
fn a_missing_object_quarantines_all_its_fields() {
    let mut describes = nps_org(&["High"], true);
    describes.insert("task".into(), None);
    let q = Quarantine::new(problems(STARTER, "nps", &describes));
    assert!(q.holds("Task", "Subject"));
    assert!(!q.holds("Contact", "NPS_Score__c"));
}

#[test]
fn edit_distance_counts_single_edits() {
    assert_eq!(edit_distance("pendo_minuts__c", "pendo_minutes__c"), 1);
    assert_eq!(edit_distance("abc", "abc"), 0);
    assert_eq!(edit_distance("", "ab"), 2);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(closest("STAGENAME", ["Name", "StageName"].into_iter()).as_deref(), Some("StageName"));
}

#[test]
fn every_example_workflow_names_what_it_uses() {
    let config = load_str(STARTER, "t.yaml").unwrap();
    for w in config.workflows.values() {
        assert!(!requirements(w).is_empty(), "{} names nothing", w.name);
    }
    let trial = requirements(&config.workflows["trials"]);
    assert!(trial.iter().any(|r| r.field == "StageName" && r.expect == Expect::Value("Qualification".into())));
    assert_eq!(objects(&trial), ["Account", "Opportunity"]);
}

#[test]
fn delivery_holds_back_quarantined_fields_and_records_left_with_only_a_stamp() {
    use crate::change::Change;
    use crate::deliver::hold_back;
    let text = STARTER.replace("minutes: Pendo_Minutes__c", "minutes: Pendo_Minuts__c");
    let q = Quarantine::new(problems(&text, "engagement", &account(|_| {})));
    let change = |key: &str, fields: &[&str]| Change {
        key: key.into(),
        salesforce_id: format!("001{key}"),
        fields: fields.iter().map(|f| ((*f).into(), json!(1))).collect(),
        prints: fields.iter().map(|_| 7).collect(),
    };
    let stamp = "Pendo_Engagement_Updated__c";
    let changes =
        vec![change("a", &["Pendo_Minuts__c", "Pendo_Events__c", stamp]), change("b", &["Pendo_Minuts__c", stamp])];
    let (send, held) = hold_back(&q, "Account", &[stamp], changes);
    assert_eq!(send.len(), 1);
    assert_eq!(send[0].field_set(), ["Pendo_Engagement_Updated__c", "Pendo_Events__c"]);
    let printed: Vec<&str> = send[0].printed().map(|(f, _, _)| f).collect();
    assert_eq!(printed, ["Pendo_Events__c", stamp], "no fingerprint for what was not sent");
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].change.key, "b");
    assert!(held[0].reason.contains("did you mean Pendo_Minutes__c"), "{}", held[0].reason);
    // Nothing quarantined: the changes go as they are.
    let (send, held) = hold_back(&Quarantine::default(), "Account", &[], vec![change("c", &["Pendo_Minuts__c"])]);
    assert_eq!((send.len(), held.len()), (1, 0));
}

/// Salesforce's Percent and Currency fields are numbers: the figures a workflow writes
/// (feature adoption 0–100, a score) go into them; text and dates do not.
#[test]
fn percent_and_currency_fields_take_numbers_only() {
    let describe = |kind: &str| -> FieldDescribe { serde_json::from_value(field("Risk__c", kind)).unwrap() };
    for kind in ["percent", "currency", "double", "int"] {
        assert_eq!(type_problem("Account.Risk__c", &Expect::Number, &describe(kind)), None, "{kind}");
    }
    let (message, _) = type_problem("Account.Risk__c", &Expect::Text, &describe("percent")).unwrap();
    assert_eq!(message, "Account.Risk__c is a percent field; the workflow needs text (string or textarea)");
    assert!(type_problem("Account.Risk__c", &Expect::Date, &describe("percent")).is_some());
}
